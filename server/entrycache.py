"""The in-memory authorized-entry cache.

Answers "which registration entries may this agent mint?" without touching the datastore:
entries parented to the agent's ID, plus entries parented to every node alias whose selectors are
a subset of the agent's node selectors, recursively (an entry's SPIFFE ID may itself be a parent),
with a seen-set against cycles.

It is built from a full datastore read, then kept current by replaying the datastore's change
events (entry and node events), so several servers sharing one database converge within one
poll interval. Events can commit out of id order across servers; ids above the contiguous
watermark are remembered and a gap is given up on after ``gap_timeout``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from plastron.clock import Clock
from plastron.datastore import ChangeBatch
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.metrics import ENTRY_CACHE_ENTRIES, ENTRY_CACHE_UPDATE
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id

log = logging.getLogger(__name__)

EVENT_BATCH = 5000


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
class _Answer:
    """One agent's authorized entries as computed at ``computed_at`` (seconds)."""

    entries: tuple[RegistrationEntry, ...]
    computed_at: int
    valid_until: int
    """The earliest expiry among the entries (0: none expires): at it the answer shrinks."""

    def holds_at(self, now: int) -> bool:
        # An earlier time than computed_at (a clock set back) may see an expired entry alive.
        return self.computed_at <= now and (not self.valid_until or now < self.valid_until)


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
        self._entries: dict[str, RegistrationEntry] = {}
        self._by_parent: dict[SpiffeId, set[str]] = defaultdict(set)
        # Node aliases (entries parented to the server) by each of their selectors: an agent's
        # aliases are found from its own node selectors, not by testing every alias per query.
        self._aliases_by_selector: dict[Selector, set[str]] = defaultdict(set)
        self._node_selectors: dict[SpiffeId, frozenset[Selector]] = {}
        self._entry_cursor = _EventCursor()
        self._node_cursor = _EventCursor()
        self._lock = asyncio.Lock()
        # The refresh waiting for the lock, not yet reading: callers arriving now share it.
        self._queued: asyncio.Task[bool] | None = None
        self.version = 0  # bumped on every change; lets callers notice updates cheaply
        # Each agent's last answer, reused while nothing changed (same version) and none of
        # its entries has expired since; every agent's sync and every signing call asks again.
        self._answers: dict[SpiffeId, _Answer] = {}
        self._answers_version = 0

    # ---- building -------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Full reload from the datastore (at start, and periodically as a safety net)."""
        with ENTRY_CACHE_UPDATE.labels("rebuild").time():
            await self._rebuild()
        ENTRY_CACHE_ENTRIES.set(len(self._entries))

    async def _rebuild(self) -> None:
        async with self._lock:
            entry_event, node_event = await self._source.latest_event_ids()
            entries = await self._source.list_all_entries()
            nodes = await self._source.list_node_selectors()
            self._entries = {}
            self._by_parent = defaultdict(set)
            self._aliases_by_selector = defaultdict(set)
            for entry in entries:
                self._put(entry)
            self._node_selectors = {k: frozenset(v) for k, v in nodes.items()}
            # Events at or below the ids read before the full load are already reflected.
            self._entry_cursor = _EventCursor(watermark=entry_event)
            self._node_cursor = _EventCursor(watermark=node_event)
            self.version += 1

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
        ENTRY_CACHE_ENTRIES.set(len(self._entries))
        return changed

    async def _refresh_locked(self) -> bool:
        batch = await self._source.read_changes(
            self._entry_cursor.query_after(), self._node_cursor.query_after(), EVENT_BATCH
        )
        now = self._clock.now()
        changed = self._apply_entry_events(batch, now)
        changed = self._apply_node_events(batch, now) or changed
        if changed:
            self.version += 1
        return changed

    def _apply_entry_events(self, batch: ChangeBatch, now: dt.datetime) -> bool:
        cursor = self._entry_cursor
        fresh = [(i, eid) for i, eid in batch.entry_events if i not in cursor.seen_above]
        for eid in sorted({eid for _, eid in fresh}):
            self._remove(eid)
            if eid in batch.entries:
                self._put(batch.entries[eid])
        for event_id, _ in fresh:
            cursor.mark(event_id)
        cursor.advance(now, self._gap_timeout)
        return bool(fresh)

    def _apply_node_events(self, batch: ChangeBatch, now: dt.datetime) -> bool:
        cursor = self._node_cursor
        fresh = [(i, sid) for i, sid in batch.node_events if i not in cursor.seen_above]
        for spiffe_text in sorted({sid for _, sid in fresh}):
            node_id = SpiffeId.parse(spiffe_text)
            selectors = batch.node_selectors.get(spiffe_text)
            if selectors:
                self._node_selectors[node_id] = frozenset(selectors)
            else:
                self._node_selectors.pop(node_id, None)
        for event_id, _ in fresh:
            cursor.mark(event_id)
        cursor.advance(now, self._gap_timeout)
        return bool(fresh)

    def _put(self, entry: RegistrationEntry) -> None:
        self._entries[entry.entry_id] = entry
        self._by_parent[entry.parent_id].add(entry.entry_id)
        if entry.parent_id == self._server_id:
            for sel in entry.selectors:
                self._aliases_by_selector[sel].add(entry.entry_id)

    def _remove(self, entry_id: str) -> None:
        old = self._entries.pop(entry_id, None)
        if old is not None:
            siblings = self._by_parent.get(old.parent_id)
            if siblings is not None:
                siblings.discard(entry_id)
                if not siblings:
                    del self._by_parent[old.parent_id]
            if old.parent_id == self._server_id:
                for sel in old.selectors:
                    aliases = self._aliases_by_selector.get(sel)
                    if aliases is not None:
                        aliases.discard(entry_id)
                        if not aliases:
                            del self._aliases_by_selector[sel]

    # ---- queries --------------------------------------------------------------------------

    def set_node_selectors(self, node_id: SpiffeId, selectors: Iterable[Selector]) -> None:
        """Apply a node's selectors at once (the attesting server knows them before the poll)."""
        self._node_selectors[node_id] = frozenset(selectors)
        self.version += 1

    def matching_aliases(self, agent_id: SpiffeId) -> list[RegistrationEntry]:
        """Node-alias entries whose selectors are all among the agent's node selectors."""
        node_selectors = self._node_selectors.get(agent_id, frozenset())
        if not node_selectors:
            return []
        # An alias matches only if it has at least one of the agent's selectors: candidates
        # come from the index, then each is checked whole (every selector must be held).
        candidates: set[str] = set()
        for sel in node_selectors:
            candidates.update(self._aliases_by_selector.get(sel, ()))
        return [
            self._entries[eid]
            for eid in sorted(candidates)
            if self._entries[eid].selectors
            and node_selectors.issuperset(self._entries[eid].selectors)
        ]

    def authorized_entries(self, agent_id: SpiffeId) -> list[RegistrationEntry]:
        """Entries the agent may mint, sorted by entry id (a fresh list the caller may keep)."""
        now = int(self._clock.now().timestamp())
        if self._answers_version != self.version:
            self._answers.clear()
            self._answers_version = self.version
        answer = self._answers.get(agent_id)
        if answer is None or not answer.holds_at(now):
            entries = self._compute_authorized(agent_id, now)
            expiries = [e.expires_at for e in entries if e.expires_at]
            answer = _Answer(tuple(entries), now, min(expiries, default=0))
            self._answers[agent_id] = answer
        return list(answer.entries)

    def _compute_authorized(self, agent_id: SpiffeId, now: int) -> list[RegistrationEntry]:
        roots = [agent_id] + [alias.spiffe_id for alias in self.matching_aliases(agent_id)]
        seen_parents: set[SpiffeId] = set()
        seen_entries: set[str] = set()
        result: list[RegistrationEntry] = []
        queue = list(roots)
        while queue:
            parent = queue.pop()
            if parent in seen_parents:
                continue
            seen_parents.add(parent)
            for eid in self._by_parent.get(parent, ()):
                if eid in seen_entries:
                    continue
                seen_entries.add(eid)
                entry = self._entries[eid]
                if entry.expires_at and entry.expires_at <= now:
                    continue
                result.append(entry)
                queue.append(entry.spiffe_id)
        result.sort(key=lambda e: e.entry_id)
        return result

    def authorized_entry(self, agent_id: SpiffeId, entry_id: str) -> RegistrationEntry | None:
        """The entry if the agent may mint it, else None (checked on every signing call)."""
        if entry_id not in self._entries:
            return None
        for entry in self.authorized_entries(agent_id):
            if entry.entry_id == entry_id:
                return entry
        return None

    def entry(self, entry_id: str) -> RegistrationEntry | None:
        return self._entries.get(entry_id)

    def entries_with_spiffe_id(self, spiffe_id: SpiffeId) -> list[RegistrationEntry]:
        return [e for e in self._entries.values() if e.spiffe_id == spiffe_id]

    def __len__(self) -> int:
        return len(self._entries)


def _retrieve_exception(task: asyncio.Task[bool]) -> None:
    """Every caller of a shared refresh may have been cancelled: nobody else reads its error."""
    if not task.cancelled():
        task.exception()
