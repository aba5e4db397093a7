"""A DataStore for testing what the server does when its store fails: the real sql store
(SQLite in the test's directory) behind the DataStore protocol, with failures on demand.

- :meth:`FaultInjectingDataStore.fail_next` makes the next call of one protocol method raise a
  given error before it reaches the store (as SPIRE's fake datastore ``SetNextError``): errors a
  store plugin may raise that SQLite would not, such as a plugin's own bug;
- :meth:`FaultInjectingDataStore.fail_statement` makes an SQL statement fail *inside* its
  transaction with the driver's own error (``sqlite3.OperationalError``), so the sql store's
  real rollback and error mapping run, as when a disk or a database connection goes away.

Everything else is the sql store itself, so results are never invented. A server uses it
through the plugin model: ``registries_with_faults()`` adds ``DataStore "fault_injecting"``
(plugin_data as the sql store's) to the server's registries.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from sqlalchemy import event

from plastron.configs.plugin_blocks import PluginConfig
from plastron.datastore import ChangeBatch, DataStore, EntryFilters, NodeFilters, NodeUpdate
from plastron.errors import PlastronError
from plastron.plugins import PluginContext, Registries
from plastron.records import (
    AttestedNode,
    CAJournal,
    DeleteMode,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from plastron.selector import Selector
from plastron.server.datastore.plugin import create_sql_datastore
from plastron.server.datastore.store import SqlDataStore
from plastron.server.plugin_loading import load_server_plugins
from plastron.spiffe.ids import SpiffeId, TrustDomain

NAME = "fault_injecting"
METHODS = frozenset(name for name in vars(DataStore) if not name.startswith("_"))


@dataclass
class _StatementFault:
    pattern: re.Pattern[str]
    skip: int
    message: str


class FaultInjectingDataStore:
    def __init__(self, store: SqlDataStore) -> None:
        self.store = store
        self._next_errors: dict[str, BaseException] = {}
        self._statement_faults: list[_StatementFault] = []
        self._lock = threading.Lock()  # statements run on the store's worker threads
        self.calls: list[str] = []
        event.listen(store.engine, "before_cursor_execute", self._on_statement)

    # ---- injecting --------------------------------------------------------------------------

    def fail_next(self, method: str, error: BaseException) -> None:
        """The next call of ``method`` raises ``error`` without reaching the store."""
        if method not in METHODS:
            raise ValueError(f"{method!r} is not a DataStore method")
        self._next_errors[method] = error

    def fail_statement(
        self, pattern: str, *, after: int = 0, message: str = "disk I/O error"
    ) -> None:
        """The SQL statement ``pattern`` (a regular expression) finds fails, after ``after``
        such statements have run, with ``sqlite3.OperationalError(message)`` inside its
        transaction. Once: the statements after it run as usual."""
        with self._lock:
            self._statement_faults.append(_StatementFault(re.compile(pattern), after, message))

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._next_errors) + len(self._statement_faults)

    def _on_statement(
        self, conn: Any, cursor: Any, statement: str, *args: Any, **kwargs: Any
    ) -> None:
        with self._lock:
            for fault in self._statement_faults:
                if not fault.pattern.search(statement):
                    continue
                if fault.skip:
                    fault.skip -= 1
                    continue
                self._statement_faults.remove(fault)
                raise sqlite3.OperationalError(fault.message)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        error = self._next_errors.pop(method, None)
        if error is not None:
            raise error

    # ---- the DataStore protocol: each method checks for a fault, then is the sql store's ----

    async def close(self) -> None:
        self._enter("close")
        event.remove(self.store.engine, "before_cursor_execute", self._on_statement)
        await self.store.close()

    async def health_check(self) -> None:
        self._enter("health_check")
        await self.store.health_check()

    async def create_bundle(self, td: TrustDomain, data: bytes) -> None:
        self._enter("create_bundle")
        await self.store.create_bundle(td, data)

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None:
        self._enter("fetch_bundle")
        return await self.store.fetch_bundle(td)

    async def list_bundles(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[tuple[TrustDomain, bytes]], str]:
        self._enter("list_bundles")
        return await self.store.list_bundles(page_size, page_token)

    async def count_bundles(self) -> int:
        self._enter("count_bundles")
        return await self.store.count_bundles()

    async def set_bundle(self, td: TrustDomain, data: bytes) -> None:
        self._enter("set_bundle")
        await self.store.set_bundle(td, data)

    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        self._enter("update_bundle")
        return await self.store.update_bundle(td, fn)

    async def delete_bundle(self, td: TrustDomain, mode: DeleteMode = "restrict") -> None:
        self._enter("delete_bundle")
        await self.store.delete_bundle(td, mode)

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        self._enter("create_attested_node")
        return await self.store.create_attested_node(node)

    async def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        self._enter("fetch_attested_node")
        return await self.store.fetch_attested_node(spiffe_id)

    async def update_attested_node(
        self, spiffe_id: SpiffeId, **fields: Unpack[NodeUpdate]
    ) -> AttestedNode:
        self._enter("update_attested_node")
        return await self.store.update_attested_node(spiffe_id, **fields)

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        self._enter("delete_attested_node")
        return await self.store.delete_attested_node(spiffe_id)

    async def upsert_attested_node_with_selectors(self, node: AttestedNode) -> AttestedNode:
        self._enter("upsert_attested_node_with_selectors")
        return await self.store.upsert_attested_node_with_selectors(node)

    async def admit_attested_node(
        self, spiffe_id: SpiffeId, build: Callable[[AttestedNode | None], AttestedNode]
    ) -> AttestedNode:
        self._enter("admit_attested_node")
        return await self.store.admit_attested_node(spiffe_id, build)

    async def list_attested_nodes(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[NodeFilters]
    ) -> tuple[list[AttestedNode], str]:
        self._enter("list_attested_nodes")
        return await self.store.list_attested_nodes(
            page_size=page_size, page_token=page_token, **filters
        )

    async def count_attested_nodes(self, **filters: Unpack[NodeFilters]) -> int:
        self._enter("count_attested_nodes")
        return await self.store.count_attested_nodes(**filters)

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]:
        self._enter("get_node_selectors")
        return await self.store.get_node_selectors(spiffe_id)

    async def list_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        self._enter("list_node_selectors")
        return await self.store.list_node_selectors()

    async def create_entries(
        self, batch: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PlastronError]:
        self._enter("create_entries")
        return await self.store.create_entries(batch)

    async def fetch_entry(self, entry_id: str) -> RegistrationEntry | None:
        self._enter("fetch_entry")
        return await self.store.fetch_entry(entry_id)

    async def fetch_entries(self, entry_ids: Sequence[str]) -> dict[str, RegistrationEntry]:
        self._enter("fetch_entries")
        return await self.store.fetch_entries(entry_ids)

    async def update_entry(
        self, entry: RegistrationEntry, mask: set[str] | None = None
    ) -> RegistrationEntry:
        self._enter("update_entry")
        return await self.store.update_entry(entry, mask)

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        self._enter("delete_entry")
        return await self.store.delete_entry(entry_id)

    async def list_entries(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[EntryFilters]
    ) -> tuple[list[RegistrationEntry], str]:
        self._enter("list_entries")
        return await self.store.list_entries(page_size=page_size, page_token=page_token, **filters)

    async def count_entries(self, **filters: Unpack[EntryFilters]) -> int:
        self._enter("count_entries")
        return await self.store.count_entries(**filters)

    async def list_all_entries(self) -> list[RegistrationEntry]:
        self._enter("list_all_entries")
        return await self.store.list_all_entries()

    async def prune_attested_nodes(
        self, expires_before: int, attestation_types: Sequence[str]
    ) -> int:
        self._enter("prune_attested_nodes")
        return await self.store.prune_attested_nodes(expires_before, attestation_types)

    async def prune_expired_attested_nodes(
        self, expires_before: int, *, include_non_reattestable: bool, limit: int
    ) -> int:
        self._enter("prune_expired_attested_nodes")
        return await self.store.prune_expired_attested_nodes(
            expires_before, include_non_reattestable=include_non_reattestable, limit=limit
        )

    async def prune_entries(self, expires_before: int) -> int:
        self._enter("prune_entries")
        return await self.store.prune_entries(expires_before)

    async def create_join_token(self, token: JoinToken) -> None:
        self._enter("create_join_token")
        await self.store.create_join_token(token)

    async def consume_join_token(self, token: str) -> JoinToken | None:
        self._enter("consume_join_token")
        return await self.store.consume_join_token(token)

    async def prune_join_tokens(self, expires_before: int) -> int:
        self._enter("prune_join_tokens")
        return await self.store.prune_join_tokens(expires_before)

    async def record_exchanged_credential(self, digest: str, expires_at: int) -> bool:
        self._enter("record_exchanged_credential")
        return await self.store.record_exchanged_credential(digest, expires_at)

    async def prune_exchanged_credentials(self, expires_before: int) -> int:
        self._enter("prune_exchanged_credentials")
        return await self.store.prune_exchanged_credentials(expires_before)

    async def set_ca_journal(self, journal: CAJournal) -> CAJournal:
        self._enter("set_ca_journal")
        return await self.store.set_ca_journal(journal)

    async def prune_ca_journals(self, should_delete: Callable[[CAJournal], bool]) -> int:
        self._enter("prune_ca_journals")
        return await self.store.prune_ca_journals(should_delete)

    async def prune_events(self, older_than: int) -> int:
        self._enter("prune_events")
        return await self.store.prune_events(older_than)

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> CAJournal | None:
        self._enter("fetch_ca_journal")
        return await self.store.fetch_ca_journal(active_x509_authority_id)

    async def list_entry_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        self._enter("list_entry_events")
        return await self.store.list_entry_events(after_id, limit)

    async def list_node_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        self._enter("list_node_events")
        return await self.store.list_node_events(after_id, limit)

    async def read_changes(self, entry_after: int, node_after: int, limit: int) -> ChangeBatch:
        self._enter("read_changes")
        return await self.store.read_changes(entry_after, node_after, limit)

    async def latest_event_ids(self) -> tuple[int, int]:
        self._enter("latest_event_ids")
        return await self.store.latest_event_ids()

    async def create_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        self._enter("create_federation_relationship")
        return await self.store.create_federation_relationship(rel)

    async def fetch_federation_relationship(self, td: TrustDomain) -> FederationRelationship | None:
        self._enter("fetch_federation_relationship")
        return await self.store.fetch_federation_relationship(td)

    async def list_federation_relationships(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[FederationRelationship], str]:
        self._enter("list_federation_relationships")
        return await self.store.list_federation_relationships(page_size, page_token)

    async def update_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        self._enter("update_federation_relationship")
        return await self.store.update_federation_relationship(rel)

    async def delete_federation_relationship(self, td: TrustDomain) -> None:
        self._enter("delete_federation_relationship")
        await self.store.delete_federation_relationship(td)


def create_fault_injecting(
    plugin: PluginConfig, context: PluginContext
) -> Callable[[], Awaitable[FaultInjectingDataStore]]:
    open_sql = create_sql_datastore(PluginConfig("DataStore", "sql", plugin.plugin_data), context)

    async def open_store() -> FaultInjectingDataStore:
        return FaultInjectingDataStore(await open_sql())

    return open_store


def registries_with_faults() -> Registries:
    """The server's own plugins plus ``DataStore "fault_injecting"`` (the registry's type makes
    mypy prove the class implements the whole DataStore protocol: tools/typecheck.py)."""
    registries = load_server_plugins()
    registries.datastores.register(NAME, create_fault_injecting)
    return registries
