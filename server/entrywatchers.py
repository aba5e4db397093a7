"""The open ``EntryNotifier/Watch`` streams by agent (server/api/entrynotifier.py), told of
every entry-cache change: each stream whose agent a change reached is marked pending and woken.
A flag per stream, never a queue: however many changes come, a slow agent costs one flag.

Which agents a change reaches is the entry cache's own reckoning (server/entryindex.py drops
exactly their kept answers); a watched agent always has a kept answer (taken when its stream
opens and again at each push), so no change that concerns it goes unnoticed. Finding the
streams costs one dictionary lookup per agent reached, whatever the number of streams.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from plastron.server.entrycache import AuthorizedEntryCache, CacheChange
from plastron.server.metrics import ENTRY_WATCH_STREAMS
from plastron.server.pushbudget import PushBudget
from plastron.spiffe.ids import SpiffeId
from plastron.transport.compact_streams import CompactEvent

MAX_STREAMS_PER_AGENT = 2
# After a push, further changes wait this long and go out as one: an agent whose entries change
# without pause syncs at most 5 times a second (its poll: every 5 s), while a lone change is
# pushed at once.
PUSH_MIN_GAP_SECONDS = 0.2


@dataclass(eq=False, slots=True)
class Watcher:
    """One open Watch stream: what the change listener marks, what the handler waits on."""

    agent_id: SpiffeId
    serial: str
    wake: asyncio.Event = field(default_factory=CompactEvent)  # one per connected agent
    pending: bool = False
    """A change reached the agent since the last push."""
    node_changed: bool = False
    """The agent's node record changed: re-check it before pushing (ban, eviction, serial)."""
    replaced: bool = False
    """A newer stream of the same agent pushed this one over the per-agent cap."""


class EntryWatchers:
    """The open Watch streams by agent, told of every entry-cache change."""

    def __init__(
        self,
        cache: AuthorizedEntryCache,
        *,
        max_streams_per_agent: int = MAX_STREAMS_PER_AGENT,
        min_gap: float = PUSH_MIN_GAP_SECONDS,
        budget: PushBudget | None = None,
    ) -> None:
        self.cache = cache
        self.min_gap = min_gap
        self.budget = budget or PushBudget()
        """Pushes a second across all streams (server/pushbudget.py)."""
        self._max_per_agent = max_streams_per_agent
        self._by_agent: dict[str, list[Watcher]] = defaultdict(list)
        cache.add_listener(self._on_change)

    def open(self, agent_id: SpiffeId, serial: str) -> Watcher:
        watcher = Watcher(agent_id, serial)
        self.cache.keep_answer(agent_id)
        streams = self._by_agent[str(agent_id)]
        streams.append(watcher)
        while len(streams) > self._max_per_agent:
            oldest = streams.pop(0)
            oldest.replaced = True
            oldest.wake.set()
        ENTRY_WATCH_STREAMS.set(len(self))
        return watcher

    def close(self, watcher: Watcher) -> None:
        key = str(watcher.agent_id)
        streams = self._by_agent.get(key)
        if streams is not None and watcher in streams:
            streams.remove(watcher)
            if not streams:
                del self._by_agent[key]
        ENTRY_WATCH_STREAMS.set(len(self))

    def __len__(self) -> int:
        return sum(len(streams) for streams in self._by_agent.values())

    def _on_change(self, change: CacheChange) -> None:
        if change.everything:
            # The hourly full reload, a safety net that rarely changes anything: pushing every
            # agent for it would make them all sync at once; what it did change (events lost
            # to a gap) reaches them with their next poll. Their answers are kept again so
            # later changes are noticed (the work their next sync would do anyway).
            for streams in self._by_agent.values():
                self.cache.keep_answer(streams[0].agent_id)
            return
        for key in change.agents | change.nodes:
            for watcher in self._by_agent.get(key, ()):
                watcher.pending = True
                watcher.node_changed |= key in change.nodes
                watcher.wake.set()
