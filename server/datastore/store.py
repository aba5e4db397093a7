"""The ``sql`` DataStore (:class:`plastron.datastore.DataStore`) over SQLite, PostgreSQL and
MySQL/MariaDB.

Each method is one transaction run on the datastore's own bounded thread pool (see
``transactions.py``). Entry and node writes record change events in the same transaction.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Unpack

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from plastron.clock import Clock, to_unix
from plastron.datastore import ChangeBatch, EntryFilters, NodeFilters, NodeUpdate
from plastron.errors import (
    AlreadyExists,
    DataStoreError,
    InvalidArgument,
    NotFound,
    PlastronError,
)
from plastron.records import (
    AttestedNode,
    CAJournal,
    DeleteMode,
    EntryAlreadyExists,
    FederationRelationship,
    RegistrationEntry,
)
from plastron.selector import Selector
from plastron.server.datastore import (
    bundles,
    engine,
    entries,
    events,
    federation,
    journal,
    migrate,
    nodes,
)
from plastron.server.datastore.changes import read_changes
from plastron.server.datastore.config import SqlConfig, to_driver_target
from plastron.server.datastore.exchanged_credentials import ExchangedCredentialMethods
from plastron.server.datastore.filters import next_token, parse_page
from plastron.server.datastore.join_token_store import FOREIGN_KEY_LOG_SECONDS, JoinTokenMethods
from plastron.server.datastore.sqlite_files import prepare_sqlite_file, sqlite_file
from plastron.server.datastore.token_key import JoinTokenHasher
from plastron.server.datastore.transactions import TransactionRunner, describe
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.wire.limits import MAX_PAGE_SIZE


async def open_datastore(
    config: SqlConfig, *, clock: Clock, token_hasher: JoinTokenHasher | None = None
) -> SqlDataStore:
    """Connect, migrate (unless disabled) and return a ready store.

    ``token_hasher`` holds the key join tokens are stored under (the server loads it from its
    data_dir); without it the join-token methods refuse, and a migration that must hash
    stored plaintext tokens fails."""
    target = to_driver_target(config)
    secret = target.url.password if isinstance(target.url.password, str) else None
    if config.database_type == "sqlite3":
        prepare_sqlite_file(sqlite_file(target.url))
    eng = engine.build_engine(config)
    runner = TransactionRunner(eng, config.max_workers, secret)
    try:
        if config.disable_migration:
            step = functools.partial(migrate.check_current, eng)
        else:
            step = functools.partial(migrate.upgrade, eng, token_hasher)
        await asyncio.get_running_loop().run_in_executor(None, step)
    except PlastronError:
        runner.close()
        raise
    except Exception as exc:
        runner.close()
        raise DataStoreError(f"datastore: open failed: {describe(exc, secret)}") from None
    return SqlDataStore(runner, clock, token_hasher)


class SqlDataStore(JoinTokenMethods, ExchangedCredentialMethods):
    """The sql store; built by :func:`open_datastore`."""

    def __init__(
        self, runner: TransactionRunner, clock: Clock, token_hasher: JoinTokenHasher | None = None
    ) -> None:
        self._tx = runner
        self._clock = clock
        self._token_hasher = token_hasher
        self._foreign_keys_logged_at = -FOREIGN_KEY_LOG_SECONDS

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tools that watch its statements (tests inject driver
        faults through its events)."""
        return self._tx.engine

    def _now(self) -> int:
        return to_unix(self._clock.now())

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._tx.close)

    async def health_check(self) -> None:
        await self._tx.read("health_check", lambda c: c.execute(text("SELECT 1")).scalar_one())

    # ---- bundles ---------------------------------------------------------------------------

    async def create_bundle(self, td: TrustDomain, data: bytes) -> None:
        def work(conn: Connection) -> None:
            try:
                with conn.begin_nested():
                    bundles.create(conn, td, data)
            except IntegrityError:
                raise AlreadyExists(f"bundle for trust domain {td.name!r} already exists") from None

        await self._tx.write("create_bundle", work)

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None:
        return await self._tx.read("fetch_bundle", lambda c: bundles.fetch(c, td))

    async def list_bundles(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[tuple[TrustDomain, bytes]], str]:
        limit, after = parse_page(page_size, page_token)
        rows, ids = await self._tx.read(
            "list_bundles", lambda c: bundles.list_page(c, after, limit)
        )
        return rows, next_token(limit, ids)

    async def count_bundles(self) -> int:
        return await self._tx.read("count_bundles", bundles.count)

    async def set_bundle(self, td: TrustDomain, data: bytes) -> None:
        await self._tx.write("set_bundle", lambda c: bundles.put(c, td, data), retry_conflict=True)

    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        """Read-modify-write under a row lock; ``fn`` may run more than once on a conflict."""
        return await self._tx.write(
            "update_bundle", lambda c: bundles.read_modify_write(c, td, fn), retry_conflict=True
        )

    async def delete_bundle(self, td: TrustDomain, mode: DeleteMode = "restrict") -> None:
        if mode not in ("restrict", "dissociate", "delete"):
            raise InvalidArgument(
                f"bundle delete mode {mode!r} is not restrict, dissociate or delete"
            )
        now = self._now()
        await self._tx.write("delete_bundle", lambda c: bundles.remove(c, td, mode, now))

    # ---- attested nodes --------------------------------------------------------------------

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        now = self._now()

        def work(conn: Connection) -> AttestedNode:
            try:
                with conn.begin_nested():
                    return nodes.create(conn, node, now)
            except IntegrityError:
                raise AlreadyExists(
                    f"attested node {str(node.spiffe_id)!r} already exists"
                ) from None

        return await self._tx.write("create_attested_node", work)

    async def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        return await self._tx.read("fetch_attested_node", lambda c: nodes.fetch(c, spiffe_id))

    async def update_attested_node(
        self, spiffe_id: SpiffeId, **fields: Unpack[NodeUpdate]
    ) -> AttestedNode:
        now = self._now()
        return await self._tx.write(
            "update_attested_node", lambda c: nodes.update_fields(c, spiffe_id, fields, now)
        )

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        now = self._now()
        return await self._tx.write(
            "delete_attested_node", lambda c: nodes.remove(c, spiffe_id, now)
        )

    async def prune_attested_nodes(
        self, expires_before: int, attestation_types: Sequence[str]
    ) -> int:
        now = self._now()
        types = tuple(attestation_types)
        return await self._tx.write(
            "prune_attested_nodes", lambda c: nodes.prune(c, expires_before, types, now)
        )

    async def prune_expired_attested_nodes(
        self, expires_before: int, *, include_non_reattestable: bool, limit: int
    ) -> int:
        now = self._now()
        return await self._tx.write(
            "prune_expired_attested_nodes",
            lambda c: nodes.prune_expired(c, expires_before, include_non_reattestable, limit, now),
        )

    async def upsert_attested_node_with_selectors(self, node: AttestedNode) -> AttestedNode:
        now = self._now()
        return await self._tx.write(
            "upsert_attested_node",
            lambda c: nodes.upsert_with_selectors(c, node, now),
            retry_conflict=True,
        )

    async def admit_attested_node(
        self, spiffe_id: SpiffeId, build: Callable[[AttestedNode | None], AttestedNode]
    ) -> AttestedNode:
        now = self._now()
        return await self._tx.write(
            "admit_attested_node",
            lambda c: nodes.admit(c, spiffe_id, build, now),
            retry_conflict=True,  # two first attestations: the second sees the first's row
        )

    async def list_attested_nodes(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[NodeFilters]
    ) -> tuple[list[AttestedNode], str]:
        limit, after = parse_page(page_size, page_token)
        where = nodes.node_filter(**filters)
        found, ids = await self._tx.read(
            "list_attested_nodes", lambda c: nodes.list_page(c, where, after, limit), snapshot=True
        )
        return found, next_token(limit, ids)

    async def count_attested_nodes(self, **filters: Unpack[NodeFilters]) -> int:
        where = nodes.node_filter(**filters)
        return await self._tx.read("count_attested_nodes", lambda c: nodes.count(c, where))

    async def set_node_selectors(self, spiffe_id: SpiffeId, selectors: Sequence[Selector]) -> None:
        now = self._now()
        sels = tuple(selectors)
        await self._tx.write(
            "set_node_selectors", lambda c: nodes.set_selectors(c, spiffe_id, sels, now)
        )

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        return await self._tx.read(
            "get_node_selectors", lambda c: nodes.get_selectors(c, str(spiffe_id))
        )

    async def list_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        return await self._tx.read("list_node_selectors", nodes.all_selectors)

    # ---- registration entries ----------------------------------------------------------------

    @staticmethod
    def _insert_one(conn: Connection, entry: RegistrationEntry, now: int) -> RegistrationEntry:
        try:
            with conn.begin_nested():
                return entries.insert_entry(conn, entry, now)
        except IntegrityError:
            pass
        # The savepoint is gone; the transaction (READ COMMITTED) now sees the winning row.
        existing = entries.find_by_hash(conn, entry)
        if existing is not None:
            raise EntryAlreadyExists(
                f"an entry with spiffe_id {str(entry.spiffe_id)!r}, parent_id "
                f"{str(entry.parent_id)!r} and the same selectors already exists "
                f"(entry_id {existing.entry_id!r})",
                existing,
            )
        if entries.entry_id_taken(conn, entry.entry_id):
            raise AlreadyExists(f"entry id {entry.entry_id!r} already exists")
        raise DataStoreError(f"datastore: create_entry {entry.entry_id!r} violated a constraint")

    async def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        now = self._now()
        prepared = entries.prepare_new(entry, now)
        return await self._tx.write("create_entry", lambda c: self._insert_one(c, prepared, now))

    async def create_entries(
        self, batch: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PlastronError]:
        """Per-item results; each item in its own savepoint of one transaction."""
        if len(batch) > MAX_PAGE_SIZE:
            raise InvalidArgument(f"create_entries batch is larger than {MAX_PAGE_SIZE}")
        now = self._now()
        prepared: list[RegistrationEntry | PlastronError] = []
        for entry in batch:
            try:
                prepared.append(entries.prepare_new(entry, now))
            except PlastronError as exc:
                prepared.append(exc)

        def work(conn: Connection) -> list[RegistrationEntry | PlastronError]:
            results: list[RegistrationEntry | PlastronError] = []
            for item in prepared:
                if isinstance(item, PlastronError):
                    results.append(item)
                    continue
                try:
                    results.append(self._insert_one(conn, item, now))
                except PlastronError as exc:
                    results.append(exc)
            return results

        return await self._tx.write("create_entries", work)

    async def fetch_entry(self, entry_id: str) -> RegistrationEntry | None:
        found = await self.fetch_entries([entry_id])
        return found.get(entry_id)

    async def fetch_entries(self, entry_ids: Sequence[str]) -> dict[str, RegistrationEntry]:
        ids = list(entry_ids)
        return await self._tx.read(
            "fetch_entries", lambda c: entries.fetch_entries(c, ids), snapshot=True
        )

    async def update_entry(
        self, entry: RegistrationEntry, mask: set[str] | None = None
    ) -> RegistrationEntry:
        now = self._now()

        def work(conn: Connection) -> RegistrationEntry:
            try:
                with conn.begin_nested():
                    return entries.update_entry(conn, entry, mask, now)
            except IntegrityError:
                pass
            raise EntryAlreadyExists(
                f"another entry with spiffe_id {str(entry.spiffe_id)!r}, parent_id "
                f"{str(entry.parent_id)!r} and the same selectors already exists",
                entries.find_by_hash(conn, entry),
            )

        return await self._tx.write("update_entry", work)

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        now = self._now()

        def work(conn: Connection) -> RegistrationEntry:
            gone = entries.delete_entries(conn, [entry_id], now)
            if not gone:
                raise NotFound(f"entry {entry_id!r} does not exist")
            return gone[0]

        return await self._tx.write("delete_entry", work)

    async def delete_entries(
        self, entry_ids: Sequence[str]
    ) -> list[RegistrationEntry | PlastronError]:
        """Per-item results in input order: the deleted entry, or NotFound."""
        if len(entry_ids) > MAX_PAGE_SIZE:
            raise InvalidArgument(f"delete_entries batch is larger than {MAX_PAGE_SIZE}")
        now = self._now()
        ids = list(entry_ids)
        gone = await self._tx.write("delete_entries", lambda c: entries.delete_entries(c, ids, now))
        by_id = {e.entry_id: e for e in gone}
        return [
            by_id.pop(i) if i in by_id else NotFound(f"entry {i!r} does not exist") for i in ids
        ]

    async def list_entries(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[EntryFilters]
    ) -> tuple[list[RegistrationEntry], str]:
        limit, after = parse_page(page_size, page_token)
        where = entries.entry_filter(**filters)

        def work(conn: Connection) -> tuple[list[RegistrationEntry], list[int]]:
            pks = entries.list_entry_pks(conn, where, after, limit)
            return entries.load_entries(conn, pks), pks

        found, pks = await self._tx.read("list_entries", work, snapshot=True)
        return found, next_token(limit, pks)

    async def count_entries(self, **filters: Unpack[EntryFilters]) -> int:
        where = entries.entry_filter(**filters)
        return await self._tx.read("count_entries", lambda c: entries.count_entries(c, where))

    async def list_all_entries(self) -> list[RegistrationEntry]:
        return await self._tx.read("list_all_entries", entries.load_all_entries, snapshot=True)

    async def prune_entries(self, expires_before: int) -> int:
        now = self._now()
        return await self._tx.write(
            "prune_entries", lambda c: entries.prune_entries(c, expires_before, now)
        )

    # ---- CA journal --------------------------------------------------------------------------

    async def set_ca_journal(self, j: CAJournal) -> CAJournal:
        return await self._tx.write("set_ca_journal", lambda c: journal.put(c, j))

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> CAJournal | None:
        return await self._tx.read(
            "fetch_ca_journal", lambda c: journal.fetch(c, active_x509_authority_id)
        )

    async def list_ca_journals(self) -> list[CAJournal]:
        return await self._tx.read("list_ca_journals", journal.list_all)

    async def prune_ca_journals(self, should_delete: Callable[[CAJournal], bool]) -> int:
        """Delete the journals for which ``should_delete`` is true (it reads the blob format)."""
        return await self._tx.write("prune_ca_journals", lambda c: journal.prune(c, should_delete))

    # ---- change events -----------------------------------------------------------------------

    @staticmethod
    def _check_event_args(after_id: int, limit: int) -> None:
        if after_id < 0:
            raise InvalidArgument(f"after_id must not be negative (got {after_id})")
        if not 1 <= limit <= events.MAX_EVENT_BATCH:
            raise InvalidArgument(f"limit must be within 1..{events.MAX_EVENT_BATCH} (got {limit})")

    async def list_entry_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        self._check_event_args(after_id, limit)
        return await self._tx.read(
            "list_entry_events", lambda c: events.list_entry_events(c, after_id, limit)
        )

    async def list_node_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        self._check_event_args(after_id, limit)
        return await self._tx.read(
            "list_node_events", lambda c: events.list_node_events(c, after_id, limit)
        )

    async def read_changes(self, entry_after: int, node_after: int, limit: int) -> ChangeBatch:
        self._check_event_args(entry_after, limit)
        self._check_event_args(node_after, limit)
        return await self._tx.read(
            "read_changes",
            lambda c: read_changes(c, entry_after, node_after, limit),
            snapshot=True,
        )

    async def latest_event_ids(self) -> tuple[int, int]:
        return await self._tx.read("latest_event_ids", events.latest_event_ids)

    async def prune_events(self, older_than: int) -> int:
        return await self._tx.write("prune_events", lambda c: events.prune_events(c, older_than))

    # ---- federation relationships ------------------------------------------------------------

    async def create_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        def work(conn: Connection) -> FederationRelationship:
            try:
                with conn.begin_nested():
                    return federation.create(conn, rel)
            except IntegrityError:
                raise AlreadyExists(
                    f"federation relationship with {rel.trust_domain.name!r} already exists"
                ) from None

        return await self._tx.write("create_federation_relationship", work)

    async def fetch_federation_relationship(self, td: TrustDomain) -> FederationRelationship | None:
        return await self._tx.read(
            "fetch_federation_relationship", lambda c: federation.fetch(c, td)
        )

    async def list_federation_relationships(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[FederationRelationship], str]:
        limit, after = parse_page(page_size, page_token)
        rels, ids = await self._tx.read(
            "list_federation_relationships", lambda c: federation.list_page(c, after, limit)
        )
        return rels, next_token(limit, ids)

    async def update_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        return await self._tx.write(
            "update_federation_relationship", lambda c: federation.update_rel(c, rel)
        )

    async def delete_federation_relationship(self, td: TrustDomain) -> None:
        await self._tx.write("delete_federation_relationship", lambda c: federation.remove(c, td))
