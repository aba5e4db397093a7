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

SCRIPT_LOCATION = "plastron.server.datastore:migrations"
# Arbitrary constant shared by every Plastron server: serialises concurrent start-ups.
_PG_LOCK_KEY = 0x706C6173
_MYSQL_LOCK_NAME = "plastron_migrations"


def _alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise DataStoreError("datastore: migration scripts are missing (no head revision)")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the head revision; safe when several servers start at once."""
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
                if current_revision(conn) != head_revision():
                    command.upgrade(_alembic_config(conn), "head")
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
