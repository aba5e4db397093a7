"""Join tokens at rest are keyed digests on every backend: a dump of the table gives no usable
token, a datastore opened under another key finds none, and the migration hashes plaintext
rows of an older schema so their tokens still attest once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select, text

from plastron.clock import ManualClock
from plastron.errors import DataStoreError
from plastron.records import JoinToken
from plastron.selector import Selector
from plastron.server.datastore import migrate
from plastron.server.datastore.config import SqlConfig, to_driver_target
from plastron.server.datastore.engine import WRITE_OPTION, build_engine
from plastron.server.datastore.schema import join_tokens
from plastron.server.datastore.sqlite_files import sqlite_file
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.server.datastore.token_key import JoinTokenHasher
from plastron.spiffe.ids import SpiffeId, TrustDomain

# Short, guessable tokens: the kind an operator may choose; the digest must still hide them.
TOKENS = ["node-1", "node-2", "Sekr1t.token_x"]


def _table_dump(config: SqlConfig) -> list[tuple[object, ...]]:
    eng = build_engine(config)
    try:
        with eng.connect() as conn:
            return [tuple(row) for row in conn.execute(select(join_tokens)).all()]
    finally:
        eng.dispose()


async def test_rows_hold_keyed_digests_only(ds: SqlDataStore, backend: SqlConfig) -> None:
    hasher = ds._token_hasher  # the key this datastore was opened with
    assert hasher is not None
    for token in TOKENS:
        await ds.create_join_token(JoinToken(token, 100))
    rows = _table_dump(backend)
    assert len(rows) == len(TOKENS)
    dump = repr(rows)
    for token in TOKENS:
        assert token not in dump and token.encode().hex() not in dump
        want = hmac.new(hasher._key, token.encode(), hashlib.sha256).hexdigest()
        assert (want, hasher.key_id) in {(r[1], r[2]) for r in rows}
    assert await ds.consume_join_token("node-1") == JoinToken("node-1", 100)
    assert await ds.consume_join_token("node-1") is None


async def test_another_key_finds_nothing_and_says_why(
    ds: SqlDataStore, backend: SqlConfig, caplog: pytest.LogCaptureFixture
) -> None:
    await ds.create_join_token(JoinToken("node-1", 100))
    other = await open_datastore(
        backend, clock=ManualClock(), token_hasher=JoinTokenHasher.generate()
    )
    try:
        with caplog.at_level(logging.WARNING):
            assert await other.consume_join_token("node-1") is None
        assert ds._token_hasher is not None
        assert f"other_key_ids={ds._token_hasher.key_id}(1)" in caplog.text
        assert "join_token.key" in caplog.text and "node-1" not in caplog.text
    finally:
        await other.close()
    assert await ds.consume_join_token("node-1") is not None


def _migrate_to_0001_with_plaintext(config: SqlConfig, tokens: list[str]) -> None:
    eng = build_engine(config)
    try:
        with eng.connect().execution_options(**{WRITE_OPTION: True}) as conn:
            with conn.begin():
                command.upgrade(migrate._alembic_config(conn), "0001")
            with conn.begin():
                for i, token in enumerate(tokens):
                    conn.execute(
                        text("INSERT INTO join_tokens (token, expiry) VALUES (:t, :e)"),
                        {"t": token, "e": 100 + i},
                    )
    finally:
        eng.dispose()


async def test_migration_hashes_plaintext_tokens_that_then_attest_once(
    scratch_db: SqlConfig,
) -> None:
    _migrate_to_0001_with_plaintext(scratch_db, TOKENS)
    hasher = JoinTokenHasher.generate()
    store = await open_datastore(scratch_db, clock=ManualClock(), token_hasher=hasher)
    try:
        if scratch_db.database_type == "sqlite3":
            _assert_not_in_sqlite_files(scratch_db, TOKENS)  # while the server has it open
        dump = repr(_table_dump(scratch_db))
        assert not any(token in dump for token in TOKENS)
        eng = build_engine(scratch_db)
        with eng.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("join_tokens")}
        eng.dispose()
        assert columns == {"id", "token_hash", "key_id", "expiry", "alias_spiffe_id"}
        # Each token twice, concurrently: exactly one of its two attestations wins.
        results = await asyncio.gather(*(store.consume_join_token(t) for t in TOKENS * 2))
        n = len(TOKENS)
        for i, token in enumerate(TOKENS):
            pair = {results[i], results[n + i]}
            assert pair == {JoinToken(token, 100 + i), None}, (token, pair)
    finally:
        await store.close()


def _assert_not_in_sqlite_files(config: SqlConfig, tokens: list[str]) -> None:
    path = Path(sqlite_file(to_driver_target(config).url))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        data = name.read_bytes() if name.exists() else b""
        for token in tokens:
            assert token.encode() not in data, f"{token!r} is still readable in {name}"


async def test_migration_without_the_key_refuses_plaintext_rows(scratch_db: SqlConfig) -> None:
    _migrate_to_0001_with_plaintext(scratch_db, ["node-1"])
    with pytest.raises(DataStoreError, match="1 stored join tokens must be hashed"):
        await open_datastore(scratch_db, clock=ManualClock())
    assert "node-1" in repr(_table_dump_0001(scratch_db))  # nothing lost: the upgrade rolled back


def _table_dump_0001(config: SqlConfig) -> list[tuple[object, ...]]:
    eng = build_engine(config)
    try:
        with eng.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT token FROM join_tokens")).all()]
    finally:
        eng.dispose()


async def test_alias_entry_is_made_in_the_consuming_transaction(ds: SqlDataStore) -> None:
    alias = TrustDomain("example.org").spiffe_id("/node")
    await ds.create_join_token(JoinToken("node-1", 100, alias))
    assert await ds.list_all_entries() == []  # the token's agent ID is not stored meanwhile
    assert await ds.consume_join_token("node-1") == JoinToken("node-1", 100, alias)
    [made] = await ds.list_all_entries()
    parent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/node-1")
    assert (made.spiffe_id, made.parent_id) == (alias, parent)
    assert made.selectors == (Selector("spiffe_id", str(parent)),)
    assert await ds.consume_join_token("node-1") is None
    assert len(await ds.list_all_entries()) == 1
