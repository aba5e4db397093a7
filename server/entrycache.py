"""The in-memory authorized-entry cache.

Answers "which registration entries may this agent mint?" without touching the datastore:
entries parented to the agent's ID, plus entries parented to every node alias whose selectors are
a subset of the agent's node selectors, recursively (an entry's SPIFFE ID may itself be a parent),
with a seen-set against cycles.

It is built from a full datastore read, then kept current by replaying the datastore's change
events (entry and node events), so several servers sharing one database converge within one
poll interval. Events can commit out of id order across servers; ids above the contiguous
watermark are remembered and a gap is given up on after ``gap_timeout``.

Every applied change is also told to the cache's listeners as a :class:`CacheChange`: the agents
whose kept answer it reached, and the agents whose node record changed, so the server can push
"sync now" to them (server/entrywatchers.py, server/api/entrynotifier.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from plastron.clock import Clock
from plastron.datastore import ChangeBatch
from plastron.gcpause import freeze_after, gc_paused, thaw_and_collect
from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.server.entryindex import EntryIndex
from plastron.server.metrics import ENTRY_CACHE_ENTRIES, ENTRY_CACHE_UPDATE
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id

log = logging.getLogger(__name__)

EVENT_BATCH = 5000
# From this many entries a rebuilt cache is frozen out of the cyclic collector's sight
# (plastron/gcpause.py); below it a full collection over the cache is cheap anyway.
FREEZE_FROM_ENTRIES = 10_000
T = TypeVar("T")


class EntrySource(Protocol):
    """What the cache reads from the datastore."""

    async def list_all_entries(self) -> list[RegistrationEntry]: ...

    async def list_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]: ...

    async def read_changes(self, entry_after: int, node_after: int, limit: int) -> ChangeBatch: ...

    async def latest_event_ids(self) -> tuple[int, int]: ...


@dataclass
class _EventCursor:
    """Tracks which event ids were applied, tolerating out-of-order commits."""

    watermark: int = 0
    seen_above: set[int] = field(default_factory=set)
    gap_first_seen: dict[int, dt.datetime] = field(default_factory=dict)

    def query_after(self) -> int:
        return self.watermark

    def mark(self, event_id: int) -> None:
        if event_id > self.watermark:
            self.seen_above.add(event_id)

    def advance(self, now: dt.datetime, gap_timeout: dt.timedelta) -> None:
        while True:
            nxt = self.watermark + 1
            if nxt in self.seen_above:
                self.seen_above.discard(nxt)
                self.gap_first_seen.pop(nxt, None)
                self.watermark = nxt
                continue
            if not self.seen_above:
                return
            first = self.gap_first_seen.setdefault(nxt, now)
            if now - first < gap_timeout:
                return
            # A rolled-back transaction leaves a permanent hole: skip it.
            self.gap_first_seen.pop(nxt, None)
            self.watermark = nxt


@dataclass(frozen=True)
class CacheChange:
    """What one applied change reached. Only agents with a kept answer are named (an agent is
    given one by any lookup: see :meth:`AuthorizedEntryCache.keep_answer`)."""

    agents: frozenset[str] = frozenset()
    """The agents (their SPIFFE IDs as text) whose authorized entries the change may alter."""
    nodes: frozenset[str] = frozenset()
    """The agents whose node record changed (selectors, serials, ban, eviction)."""
    everything: bool = False
    """A full rebuild: every kept answer is gone."""


ChangeListener = Callable[[CacheChange], None]


class AuthorizedEntryCache:
    def __init__(
        self,
        trust_domain: TrustDomain,
        source: EntrySource,
        clock: Clock,
        *,
        gap_timeout: dt.timedelta = dt.timedelta(seconds=30),
    ) -> None:
        self._server_id = server_id(trust_domain)
        self._source = source
        self._clock = clock
        self._gap_timeout = gap_timeout
        self._index = self._new_index()
        self._entry_cursor = _EventCursor()
        self._node_cursor = _EventCursor()
        self._lock = asyncio.Lock()
        # The refresh waiting for the lock, not yet reading: callers arriving now share it.
        self._queued: asyncio.Task[bool] | None = None
        self.version = 0  # bumped on every change; lets callers notice updates cheaply
        # Attested agents as the AGENT policy last read them (see remember_node).
        self._agents: dict[SpiffeId, AttestedNode] = {}
        self.node_epoch = 0
        self._listeners: list[ChangeListener] = []
        self._reached: set[str] = set()  # since the last tell

    def _new_index(self) -> EntryIndex:
        index = EntryIndex(self._server_id)
        index.on_reach = self._note_reached
        return index

    def _note_reached(self, agent_key: str) -> None:
        self._reached.add(agent_key)

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` (synchronously: it must not block) after every applied change."""
        self._listeners.append(listener)

    def _tell(self, nodes: Iterable[SpiffeId] = (), *, everything: bool = False) -> None:
        change = CacheChange(frozenset(self._reached), frozenset(str(n) for n in nodes), everything)
        self._reached.clear()
        if not (change.agents or change.nodes or change.everything):
            return
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one broken listener must not stop the cache's updates
                log.exception("entry cache listener failed")

    # ---- building -------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Full reload from the datastore (at start, and periodically as a safety net)."""
        with ENTRY_CACHE_UPDATE.labels("rebuild").time():
            await self._rebuild()
        ENTRY_CACHE_ENTRIES.set(len(self))

    async def _rebuild(self) -> None:
        async with self._lock:
            thaw_and_collect()  # the previous build's objects: one full pass, then freed
            entry_event, node_event = await self._source.latest_event_ids()
            entries = await self._source.list_all_entries()
            nodes = await self._source.list_node_selectors()
            index = self._new_index()
            with gc_paused():
                for entry in entries:
                    index.put(entry)
                for node_id, selectors in nodes.items():
                    index.set_node_selectors(node_id, selectors)

            def swap() -> None:
                self._index = index

            if len(entries) >= FREEZE_FROM_ENTRIES:
                freeze_after(swap)
            else:
                swap()
            self._agents.clear()
            self.node_epoch += 1
            # Events at or below the ids read before the full load are already reflected.
            self._entry_cursor = _EventCursor(watermark=entry_event)
            self._node_cursor = _EventCursor(watermark=node_event)
            self.version += 1
            self._tell(everything=True)

    async def refresh(self) -> bool:
        """Apply new change events; returns True if anything changed.

        Every write made before the call is applied when it returns. Calls that arrive while
        another refresh is running share the one queued behind it, which has not read yet (so
        it sees their writes too): a burst of writes, as concurrent attestations each followed
        by a refresh, costs two rounds of event reads instead of one per write. The shared
        refresh runs as its own task, so a caller that is cancelled does not cancel the others'.
        """
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._queued_refresh())
            self._queued.add_done_callback(_retrieve_exception)
        return await asyncio.shield(self._queued)

    async def _queued_refresh(self) -> bool:
        with ENTRY_CACHE_UPDATE.labels("refresh").time():
            async with self._lock:
                self._queued = None  # it reads from here on: a later caller needs a later one
                changed = await self._refresh_locked()
        ENTRY_CACHE_ENTRIES.set(len(self))
        return changed

    async def _refresh_locked(self) -> bool:
        batch = await self._source.read_changes(
            self._entry_cursor.query_after(), self._node_cursor.query_after(), EVENT_BATCH
        )
        now = self._clock.now()
        changed = self._apply_entry_events(batch, now)
        nodes = self._apply_node_events(batch, now)
        if changed or nodes:
            self.version += 1
        self._tell(nodes)
        return changed or bool(nodes)

    def _apply_entry_events(self, batch: ChangeBatch, now: dt.datetime) -> bool:
        cursor = self._entry_cursor
        fresh = [(i, eid) for i, eid in batch.entry_events if i not in cursor.seen_above]
        for eid in sorted({eid for _, eid in fresh}):
            self._index.remove(eid)
            if eid in batch.entries:
                self._index.put(batch.entries[eid])
        for event_id, _ in fresh:
            cursor.mark(event_id)
        cursor.advance(now, self._gap_timeout)
        return bool(fresh)

    def _apply_node_events(self, batch: ChangeBatch, now: dt.datetime) -> list[SpiffeId]:
        """Apply the batch's new node events; returns the agents whose record changed."""
        cursor = self._node_cursor
        fresh = [(i, sid) for i, sid in batch.node_events if i not in cursor.seen_above]
        changed: list[SpiffeId] = []
        for spiffe_text in sorted({sid for _, sid in fresh}):
            node_id = SpiffeId.parse(spiffe_text)
            self._index.set_node_selectors(node_id, batch.node_selectors.get(spiffe_text, ()))
            self.forget_node(node_id)
            changed.append(node_id)
        for event_id, _ in fresh:
            cursor.mark(event_id)
        cursor.advance(now, self._gap_timeout)
        return changed

    # ---- attested agents ----------------------------------------------------------------

    def attested_node(self, node_id: SpiffeId) -> AttestedNode | None:
        """The agent's record as last remembered, if no change to it was seen since.

        Every agent call is authorized against its attested-node record; reading it from the
        datastore each time was a query per sync (0.5 ms of CPU on SQLite, 0.9 ms plus the
        database's own on PostgreSQL). A record is forgotten on any node event for that agent
        (ban, eviction, renewal, re-attestation: applied at once on this server, within one
        poll from other servers, as entry changes are) and on every rebuild."""
        return self._agents.get(node_id)

    def remember_node(self, node: AttestedNode, epoch: int) -> None:
        """Keep ``node``, read from the datastore when ``node_epoch`` was ``epoch``: if node
        events were applied since, the read may predate them and is not kept."""
        if epoch == self.node_epoch:
            self._agents[node.spiffe_id] = node

    def forget_node(self, node_id: SpiffeId) -> None:
        """Drop the remembered record (a change to the node made here, not yet polled)."""
        self._agents.pop(node_id, None)
        self.node_epoch += 1

    # ---- queries --------------------------------------------------------------------------

    def set_node_selectors(self, node_id: SpiffeId, selectors: Iterable[Selector]) -> None:
        """Apply a node's selectors at once (the attesting server knows them before the poll)."""
        self._index.set_node_selectors(node_id, selectors)
        self.forget_node(node_id)
        self.version += 1
        self._tell([node_id])

    def matching_aliases(self, agent_id: SpiffeId) -> list[RegistrationEntry]:
        """Node-alias entries whose selectors are all among the agent's node selectors."""
        return self._index.matching_aliases(agent_id)

    def authorized_entries(self, agent_id: SpiffeId) -> list[RegistrationEntry]:
        """Entries the agent may mint, sorted by entry id (a fresh list the caller may keep).

        Each agent's answer is kept until a change reaches it (see server/entryindex.py) or
        one of its entries expires: every agent's sync and every signing call asks again."""
        now = int(self._clock.now().timestamp())
        return list(self._index.answer(agent_id, now).entries)

    def authorized_entries_by_id(self, agent_id: SpiffeId) -> Mapping[str, RegistrationEntry]:
        """The same entries by entry id, for checking many items of one call (a batch) against
        them; read-only, and not to be kept past the call (it is a view of the kept answer,
        replaced when a change reaches the agent or one of its entries expires)."""
        now = int(self._clock.now().timestamp())
        return self._index.answer(agent_id, now).by_id

    def keep_answer(self, agent_id: SpiffeId) -> None:
        """Compute the agent's answer now and keep it, so that the next change reaching the
        agent is told to the listeners (only kept answers are dropped, and so noticed)."""
        self._index.answer(agent_id, int(self._clock.now().timestamp()))

    def authorized_entry(self, agent_id: SpiffeId, entry_id: str) -> RegistrationEntry | None:
        """The entry if the agent may mint it, else None (checked on every signing call)."""
        if entry_id not in self._index.entries:
            return None
        return self.authorized_entries_by_id(agent_id).get(entry_id)

    def derived(
        self, entries: Iterable[RegistrationEntry], make: Callable[[RegistrationEntry], T]
    ) -> list[T]:
        """``make(entry)`` for each entry (its wire encoding), made once per entry version:
        every agent's sync sends entries that have not changed since the last one."""
        return self._index.derived(entries, make)

    def entry(self, entry_id: str) -> RegistrationEntry | None:
        return self._index.entries.get(entry_id)

    def entries_with_spiffe_id(self, spiffe_id: SpiffeId) -> list[RegistrationEntry]:
        return self._index.entries_with_spiffe_id(spiffe_id)

    def __len__(self) -> int:
        return len(self._index.entries)


def _retrieve_exception(task: asyncio.Task[bool]) -> None:
    """Every caller of a shared refresh may have been cancelled: nobody else reads its error."""
    if not task.cancelled():
        task.exception()
