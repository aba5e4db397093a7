"""Schema migrations: Alembic driven in code, scripts shipped inside this package."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from plastron.errors import DataStoreError
from plastron.server.datastore.engine import WRITE_OPTION
from plastron.server.datastore.token_key import JoinTokenHasher

SCRIPT_LOCATION = "plastron.server.datastore:migrations"
# Arbitrary constant shared by every Plastron server: serialises concurrent start-ups.
_PG_LOCK_KEY = 0x706C6173
_MYSQL_LOCK_NAME = "plastron_migrations"


#: Where a migration finds the server's JoinTokenHasher (0002 hashes stored plaintext tokens).
HASHER_ATTRIBUTE = "join_token_hasher"


def _alembic_config(
    connection: Connection | None = None, token_hasher: JoinTokenHasher | None = None
) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    cfg.attributes[HASHER_ATTRIBUTE] = token_hasher
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise DataStoreError("datastore: migration scripts are missing (no head revision)")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, token_hasher: JoinTokenHasher | None = None) -> None:
    """Bring the schema to the head revision; safe when several servers start at once.

    ``token_hasher``: needed only when stored plaintext join tokens are to be hashed."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
        dialect = conn.dialect.name
        if dialect in ("mysql", "mariadb"):
            # MySQL DDL commits implicitly, so a session-level named lock guards the upgrade.
            got = conn.execute(
                text("SELECT GET_LOCK(:n, 120)"), {"n": _MYSQL_LOCK_NAME}
            ).scalar_one()
            conn.commit()
            if got != 1:
                raise DataStoreError("datastore: timed out waiting for the migration lock")
        try:
            with conn.begin():
                if dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                migrating = current_revision(conn) != head_revision()
                if migrating:
                    command.upgrade(_alembic_config(conn, token_hasher), "head")
            if migrating and dialect == "sqlite":
                # Rewritten rows (plaintext join tokens) leave the WAL for the database file,
                # whose freed pages secure_delete has zeroed.
                # Straight on the driver: a checkpoint cannot run inside a transaction.
                driver = conn.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            if dialect in ("mysql", "mariadb"):
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _MYSQL_LOCK_NAME})
                conn.commit()


def check_current(engine: Engine) -> None:
    """With migrations disabled, refuse to run against a schema this code does not expect."""
    with engine.connect() as conn:
        found = current_revision(conn)
    want = head_revision()
    if found != want:
        raise DataStoreError(
            f"datastore: schema revision is {found!r} but this server needs {want!r} "
            "and disable_migration is set"
        )
