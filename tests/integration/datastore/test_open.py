"""Opening the datastore: migrations, schema drift, SQLite settings, errors without secrets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from datastore_builders import entry
from sqlalchemy import text

from plastron.clock import ManualClock
from plastron.errors import ConfigError, DataStoreError
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.engine import build_engine
from plastron.server.datastore.schema import metadata
from plastron.server.datastore.store import open_datastore


async def test_migrations_are_idempotent_and_data_survives(scratch_db: SqlConfig) -> None:
    clock = ManualClock()
    first = await open_datastore(scratch_db, clock=clock)
    made = await first.create_entry(entry("/a", "t:1"))
    await first.close()
    second = await open_datastore(scratch_db, clock=clock)
    assert await second.list_all_entries() == [made]
    await second.close()


async def test_concurrent_first_opens_migrate_once(scratch_db: SqlConfig) -> None:
    stores = await asyncio.gather(
        *(open_datastore(scratch_db, clock=ManualClock()) for _ in range(2))
    )
    for store in stores:
        await store.health_check()
        await store.close()


async def test_migrated_schema_matches_the_code(scratch_db: SqlConfig) -> None:
    store = await open_datastore(scratch_db, clock=ManualClock())
    await store.close()
    eng = build_engine(scratch_db)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    eng.dispose()
    assert diff == []


async def test_disable_migration_refuses_an_unmigrated_database(scratch_db: SqlConfig) -> None:
    off = dataclasses.replace(scratch_db, disable_migration=True)
    with pytest.raises(DataStoreError, match="disable_migration"):
        await open_datastore(off, clock=ManualClock())
    await (await open_datastore(scratch_db, clock=ManualClock())).close()  # migrates
    store = await open_datastore(off, clock=ManualClock())
    await store.health_check()
    await store.close()


async def test_sqlite_default_file_wal_and_foreign_keys(tmp_path: Path) -> None:
    config = SqlConfig(data_dir=str(tmp_path))
    store = await open_datastore(config, clock=ManualClock())
    await store.close()
    assert (tmp_path / "datastore.sqlite3").exists()
    eng = build_engine(config)
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    eng.dispose()


async def test_sqlite_in_memory_is_refused() -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        await open_datastore(SqlConfig(connection_string=":memory:"), clock=ManualClock())


@pytest.mark.parametrize(
    ("kind", "connection_string"),
    [
        pytest.param(
            "postgres",
            "dbname=nope user=postgres password=S3cretPw!x host=127.0.0.1 port=1",
            marks=pytest.mark.postgres,
        ),
        pytest.param(
            "postgres",
            "postgres://nosuchuser:S3cretPw!x@127.0.0.1:5432/nope_db_plastron",
            marks=pytest.mark.postgres,
        ),
        pytest.param(
            "mysql",
            "root:S3cretPw!x@tcp(127.0.0.1:3306)/nope?parseTime=true",
            marks=pytest.mark.mysql,
        ),
        pytest.param("mysql", "root:S3cretPw!x@tcp(127.0.0.1:1)/nope", marks=pytest.mark.mysql),
    ],
)
async def test_connection_errors_never_show_the_password(kind: str, connection_string: str) -> None:
    config = SqlConfig(database_type=kind, connection_string=connection_string)  # type: ignore[arg-type]
    with pytest.raises(DataStoreError) as caught:
        await open_datastore(config, clock=ManualClock())
    message = str(caught.value)
    assert "S3cretPw" not in message and "S3cretPw" not in repr(caught.value)
    # The driver exception (which may quote the DSN) is not chained into tracebacks.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "open" in message
    assert "S3cretPw" not in repr(config)


async def test_sqlite_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    """SQLite alone would make datastore.sqlite3, -wal and -shm 0644 under umask 022."""
    previous = os.umask(0o022)
    try:
        store = await open_datastore(SqlConfig(data_dir=str(tmp_path)), clock=ManualClock())
        try:
            await store.create_entry(entry("/a", "t:1"))  # a write: the WAL is in use
            names = ["datastore.sqlite3", "datastore.sqlite3-wal", "datastore.sqlite3-shm"]
            modes = {n: stat.S_IMODE((tmp_path / n).stat().st_mode) for n in names}
        finally:
            await store.close()
    finally:
        os.umask(previous)
    assert modes == dict.fromkeys(names, 0o600)


async def test_sqlite_files_left_readable_by_an_older_version_are_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = SqlConfig(data_dir=str(tmp_path))
    await (await open_datastore(config, clock=ManualClock())).close()
    db = tmp_path / "datastore.sqlite3"
    db.chmod(0o644)
    (tmp_path / "datastore.sqlite3-wal").write_bytes(b"")
    (tmp_path / "datastore.sqlite3-wal").chmod(0o644)
    store = await open_datastore(config, clock=ManualClock())
    await store.close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert "now 0600" in caplog.text and f"path={db} " in caplog.text
    assert f"path={db}-wal " in caplog.text  # SQLite removed it on close
