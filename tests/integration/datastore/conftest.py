"""One datastore suite, run against SQLite, PostgreSQL and MariaDB.

Each (test module, backend, xdist worker) gets its own freshly created and migrated database,
dropped afterwards; every test starts from empty tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from datastore_databases import BACKENDS, create_database, drop_database
from sqlalchemy import delete

from plastron.clock import ManualClock
from plastron.server.datastore import migrate
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.engine import build_engine
from plastron.server.datastore.schema import metadata
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.server.datastore.token_key import JoinTokenHasher


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SqlConfig]:
    kind = request.param
    config, name = create_database(kind, tmp_path_factory.mktemp("ds"))
    eng = build_engine(config)
    migrate.upgrade(eng)
    eng.dispose()
    yield config
    drop_database(kind, name)


def empty_tables(config: SqlConfig) -> None:
    eng = build_engine(config)
    with eng.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))
    eng.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def ds(backend: SqlConfig, clock: ManualClock) -> AsyncIterator[SqlDataStore]:
    empty_tables(backend)
    store = await open_datastore(backend, clock=clock, token_hasher=JoinTokenHasher.generate())
    yield store
    await store.close()


@pytest.fixture
def db_kind(backend: SqlConfig) -> str:
    return backend.database_type


@pytest.fixture(params=BACKENDS)
def scratch_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlConfig]:
    """A brand-new, empty (unmigrated) database for this test alone."""
    config, name = create_database(request.param, tmp_path)
    yield config
    drop_database(request.param, name)
