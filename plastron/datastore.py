"""The DataStore protocol: what the server keeps, and the one shape every store gives it.

The server reads and writes its state (trust bundles, attested nodes, registration entries,
join tokens, the CA journal, change events) only through these methods, so a store is a plugin
like any other: a module's ``register(registries)`` adds a factory
``(PluginConfig, PluginContext) -> DataStoreOpener`` to ``Registries.datastores``, and the
server builds the one its ``DataStore "<name>"`` block names. The factory reads and checks its
``plugin_data`` (``validate`` stops there); the opener it returns connects and migrates. The
built-in ``sql`` store (SQLite, PostgreSQL, MySQL/MariaDB) lives in
``plastron.server.datastore``.

What every implementation must hold to, because the server relies on it:

- each call is one transaction: it happens whole or not at all (a failed batch writes nothing);
- a write to entries or nodes records a change event in the same transaction, so
  ``list_entry_events``/``list_node_events`` let other servers on the same store catch up;
- errors are Plastron errors: ``NotFound``/``AlreadyExists`` (``EntryAlreadyExists`` carries
  the entry in the way), ``InvalidArgument`` for a bad filter, page size or page token, and
  ``DataStoreError`` when the store itself fails (the API answers INTERNAL with its message,
  which must carry no SQL, parameter or password);
- list calls page by ``page_size`` (0: all) and return an opaque ``next_page_token``, empty on
  the last page; ``filters`` left out or None do not filter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, Unpack

from plastron.errors import PlastronError
from plastron.records import (
    AttestedNode,
    CAJournal,
    DeleteMode,
    FederationRelationship,
    JoinToken,
    MatchMode,
    RegistrationEntry,
)
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain


@dataclass(frozen=True)
class ChangeBatch:
    """What changed after two event IDs, read at one instant (``DataStore.read_changes``)."""

    entry_events: list[tuple[int, str]]
    entries: dict[str, RegistrationEntry]
    """The entries the events name, as they are now; an entry ID missing here was deleted."""
    node_events: list[tuple[int, str]]
    node_selectors: dict[str, tuple[Selector, ...]]
    """The selectors of the nodes the events name (by SPIFFE ID text); missing: none left."""


class EntryFilters(TypedDict, total=False):
    """The ``by_*`` filters of ListEntries/CountEntries; an absent or None one does not filter."""

    by_spiffe_id: SpiffeId | None
    by_parent_id: SpiffeId | None
    by_selectors: tuple[Sequence[Selector], MatchMode] | None
    by_federates_with: tuple[Sequence[TrustDomain], MatchMode] | None
    by_hint: str | None
    by_downstream: bool | None


class NodeFilters(TypedDict, total=False):
    """The ``by_*`` filters of ListAgents/CountAgents; an absent or None one does not filter."""

    by_attestation_type: str | None
    by_selectors: tuple[Sequence[Selector], MatchMode] | None
    by_banned: bool | None
    by_can_reattest: bool | None
    by_expires_before: int | None


class NodeUpdate(TypedDict, total=False):
    """The fields of an attested node ``update_attested_node`` may change (all but its ID)."""

    attestation_type: str
    cert_serial: str
    cert_not_after: int
    new_cert_serial: str
    new_cert_not_after: int
    can_reattest: bool
    agent_version: str
    node_data: bytes
    selectors: tuple[Selector, ...]


class DataStore(Protocol):
    """The server's store. Times are Unix seconds; bundles are ``Bundle.to_json()`` bytes."""

    async def close(self) -> None: ...

    async def health_check(self) -> None:
        """Raise if the store cannot answer a trivial query."""
        ...

    # ---- trust bundles (own and federated) --------------------------------------------------

    async def create_bundle(self, td: TrustDomain, data: bytes) -> None:
        """AlreadyExists if ``td`` has a bundle."""
        ...

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None: ...

    async def list_bundles(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[tuple[TrustDomain, bytes]], str]: ...

    async def count_bundles(self) -> int: ...

    async def set_bundle(self, td: TrustDomain, data: bytes) -> None:
        """Create or replace."""
        ...

    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        """Replace the bundle with ``fn(current)`` atomically (no concurrent write is lost);
        ``fn`` may run more than once. Returns what was stored."""
        ...

    async def delete_bundle(self, td: TrustDomain, mode: DeleteMode = "restrict") -> None:
        """NotFound if absent. Entries federating with ``td``: ``restrict`` refuses
        (FailedPrecondition), ``dissociate`` drops the relation, ``delete`` deletes them."""
        ...

    # ---- attested nodes ----------------------------------------------------------------------

    async def create_attested_node(self, node: AttestedNode) -> AttestedNode:
        """Insert only, with its selectors: AlreadyExists if the node exists."""
        ...

    async def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None:
        """The node with its selectors."""
        ...

    async def update_attested_node(
        self, spiffe_id: SpiffeId, **fields: Unpack[NodeUpdate]
    ) -> AttestedNode:
        """Change the given fields; NotFound if the node does not exist."""
        ...

    async def delete_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode:
        """NotFound if absent; its selectors go with it."""
        ...

    async def upsert_attested_node_with_selectors(self, node: AttestedNode) -> AttestedNode:
        """Create or replace the node and all its selectors (re-attestation)."""
        ...

    async def admit_attested_node(
        self, spiffe_id: SpiffeId, build: Callable[[AttestedNode | None], AttestedNode]
    ) -> AttestedNode:
        """Write ``build(current)`` (the node now stored, with its selectors, or None) with its
        selectors in one transaction: no write lands between the read and the write. ``build``
        refuses by raising, which writes nothing; it may run more than once (a concurrent
        first insert is retried). Its node must have ``spiffe_id``."""
        ...

    async def list_attested_nodes(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[NodeFilters]
    ) -> tuple[list[AttestedNode], str]: ...

    async def count_attested_nodes(self, **filters: Unpack[NodeFilters]) -> int: ...

    async def get_node_selectors(self, spiffe_id: SpiffeId) -> tuple[Selector, ...]: ...

    async def prune_attested_nodes(
        self, expires_before: int, attestation_types: Sequence[str]
    ) -> int:
        """Delete the nodes of ``attestation_types`` whose SVID expired before
        ``expires_before`` (banned ones stay), with their selectors and a change event each;
        how many went."""
        ...

    async def prune_expired_attested_nodes(
        self, expires_before: int, *, include_non_reattestable: bool, limit: int
    ) -> int:
        """Delete at most ``limit`` nodes whose SVID expired before ``expires_before``, the
        longest-expired first: never banned ones, and nodes that cannot re-attest only with
        ``include_non_reattestable``; with their selectors and a change event each. How many
        went."""
        ...

    async def list_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        """Every node's selectors (nodes without selectors left out)."""
        ...

    # ---- registration entries ----------------------------------------------------------------

    async def create_entries(
        self, batch: Sequence[RegistrationEntry]
    ) -> list[RegistrationEntry | PlastronError]:
        """One result per item, in order: the stored entry (its ID assigned if empty) or the
        item's error. Item errors do not fail the batch; a store failure fails all of it."""
        ...

    async def fetch_entry(self, entry_id: str) -> RegistrationEntry | None: ...

    async def fetch_entries(self, entry_ids: Sequence[str]) -> dict[str, RegistrationEntry]:
        """The entries that exist, by ID."""
        ...

    async def update_entry(
        self, entry: RegistrationEntry, mask: set[str] | None = None
    ) -> RegistrationEntry:
        """Change the fields in ``mask`` (None: all); NotFound, or EntryAlreadyExists if the
        result would duplicate another entry."""
        ...

    async def delete_entry(self, entry_id: str) -> RegistrationEntry:
        """NotFound if absent."""
        ...

    async def list_entries(
        self, *, page_size: int = 0, page_token: str = "", **filters: Unpack[EntryFilters]
    ) -> tuple[list[RegistrationEntry], str]: ...

    async def count_entries(self, **filters: Unpack[EntryFilters]) -> int: ...

    async def list_all_entries(self) -> list[RegistrationEntry]:
        """Every entry, read as one snapshot (the entry cache's full load)."""
        ...

    async def prune_entries(self, expires_before: int) -> int:
        """Delete entries with an expiry before ``expires_before``; how many went."""
        ...

    # ---- join tokens -------------------------------------------------------------------------

    async def create_join_token(self, token: JoinToken) -> None:
        """AlreadyExists if the token exists."""
        ...

    async def consume_join_token(self, token: str) -> JoinToken | None:
        """Use the token up (once only, also against concurrent callers) and, in the same
        transaction, create its node alias entry if it has one; None if there is no token."""
        ...

    async def prune_join_tokens(self, expires_before: int) -> int: ...

    # ---- exchanged credentials (agentless token exchange) -----------------------------------

    async def record_exchanged_credential(self, digest: str, expires_at: int) -> bool:
        """Remember a credential (its 64-hex-digit digest) until ``expires_at``; False if it
        was already recorded (a replay), also against concurrent callers on other servers."""
        ...

    async def prune_exchanged_credentials(self, expires_before: int) -> int: ...

    # ---- the CA journal ----------------------------------------------------------------------

    async def set_ca_journal(self, journal: CAJournal) -> CAJournal:
        """Create (``id == 0``) or update; returns the journal with its ID."""
        ...

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> CAJournal | None: ...

    async def prune_ca_journals(self, should_delete: Callable[[CAJournal], bool]) -> int:
        """Delete the journals for which ``should_delete`` is true; how many went."""
        ...

    # ---- change events -----------------------------------------------------------------------

    async def list_entry_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(event ID, entry ID) after ``after_id`` in ID order, at most ``limit``."""
        ...

    async def list_node_events(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """(event ID, node SPIFFE ID) after ``after_id`` in ID order, at most ``limit``."""
        ...

    async def read_changes(self, entry_after: int, node_after: int, limit: int) -> ChangeBatch:
        """In one read transaction: the entry and node events after the given event IDs (at
        most ``limit`` of each, as ``list_entry_events``/``list_node_events``), the current
        entries they name and the current selectors of the nodes they name."""
        ...

    async def latest_event_ids(self) -> tuple[int, int]:
        """The highest (entry event ID, node event ID), 0 when there is none."""
        ...

    async def prune_events(self, older_than: int) -> int:
        """Delete the entry and node events created before ``older_than``; how many went."""
        ...

    # ---- federation relationships ------------------------------------------------------------

    async def create_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        """AlreadyExists when one with the trust domain exists."""
        ...

    async def fetch_federation_relationship(
        self, td: TrustDomain
    ) -> FederationRelationship | None: ...

    async def list_federation_relationships(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[FederationRelationship], str]: ...

    async def update_federation_relationship(
        self, rel: FederationRelationship
    ) -> FederationRelationship:
        """NotFound when there is none with the trust domain."""
        ...

    async def delete_federation_relationship(self, td: TrustDomain) -> None:
        """NotFound when there is none with the trust domain."""
        ...


#: What a DataStore factory returns, its settings checked: calling it opens the store.
DataStoreOpener = Callable[[], Awaitable[DataStore]]
