"""The authorized-entry cache's in-memory indexes and each agent's last answer.

An agent's authorized entries are those parented to its ID, or to a node alias (an entry
parented to the server) whose selectors are all among the agent's node selectors, and
recursively those parented to any of their SPIFFE IDs. Answers are kept per agent and only the
answers a change can reach are dropped: a change to an entry parented to P reaches the agents
that reach P, found by walking upward from P (entries whose SPIFFE ID is P, then their
parents, up to agent IDs and aliases); a change to an alias reaches the agents it matches; a
change to an agent's node selectors reaches that agent. The walk may over-approximate (an
expired entry on the path still counts), never under. Each agent whose kept answer a change
drops is told to ``on_reach`` (the entry push: server/entrywatchers.py).

IDs are indexed as strings: a SpiffeId hashes through two dataclass tuples, a str caches its
hash, and a 5,000-entry lookup hashes about three IDs per entry.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
_ENTRY_ID = attrgetter("entry_id")
Child = tuple[RegistrationEntry, str]
"""An entry and its SPIFFE ID as a string (the key of the entries it parents)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One agent's authorized entries as computed at ``computed_at`` (seconds)."""

    entries: tuple[RegistrationEntry, ...]
    """Sorted by entry id."""
    computed_at: int
    valid_until: int
    """The earliest expiry among the entries (0: none expires): at it the answer shrinks."""

    @property
    def by_id(self) -> Mapping[str, RegistrationEntry]:
        """The same entries by entry id (read-only): a batch checks each of its items here."""
        return EntriesById(self.entries)

    def holds_at(self, now: int) -> bool:
        # An earlier time than computed_at (a clock set back) may see an expired entry alive.
        return self.computed_at <= now and (not self.valid_until or now < self.valid_until)


class EntriesById(Mapping[str, RegistrationEntry]):
    """Entries sorted by entry id, looked up by id by bisection. Every agent's answer is kept
    (10,000 agents and more), and a dict of its ~100 entries by id was about 4 KiB of each;
    the answer's sorted tuple already orders them by id."""

    __slots__ = ("_entries",)

    def __init__(self, entries: tuple[RegistrationEntry, ...]) -> None:
        self._entries = entries

    def __getitem__(self, entry_id: str) -> RegistrationEntry:
        entries = self._entries
        i = bisect_left(entries, entry_id, key=_ENTRY_ID)
        if i < len(entries) and entries[i].entry_id == entry_id:
            return entries[i]
        raise KeyError(entry_id)

    def __iter__(self) -> Iterator[str]:
        return (e.entry_id for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class EntryIndex:
    def __init__(self, server_id: SpiffeId) -> None:
        self._server_key = str(server_id)
        self.entries: dict[str, RegistrationEntry] = {}
        # entry id → (its SPIFFE ID, its parent ID), as strings
        self._keys: dict[str, tuple[str, str]] = {}
        self._children: dict[str, dict[str, Child]] = defaultdict(dict)
        # SPIFFE ID → ids of the entries with it: nearly always one, so a tuple (a set is 216
        # bytes at least; at 100,000 entries that was 20 MiB).
        self._by_spiffe_id: dict[str, tuple[str, ...]] = {}
        # Node aliases by each of their selectors, and agents by each of their node selectors:
        # an agent's aliases (and an alias's agents) come from these, not from testing all.
        self._aliases_by_selector: dict[Selector, set[str]] = defaultdict(set)
        self._agents_by_selector: dict[Selector, set[str]] = defaultdict(set)
        self._node_selectors: dict[str, frozenset[Selector]] = {}
        self._answers: dict[str, Answer] = {}
        # Told the ID of each agent whose kept answer a change drops.
        self.on_reach: Callable[[str], None] | None = None
        # Forms derived from an entry (its wire encoding), made once per entry version: per
        # deriving function, entry id → (the entry it was made from, the form).
        self._memos: dict[
            Callable[[RegistrationEntry], Any], dict[str, tuple[RegistrationEntry, Any]]
        ] = {}

    # ---- entries ----------------------------------------------------------------------------

    def put(self, entry: RegistrationEntry) -> None:
        if entry.entry_id in self.entries:
            self.remove(entry.entry_id)
        # A parent is shared by many entries (an alias by ~100): one copy of its ID string.
        eid, key, parent = entry.entry_id, str(entry.spiffe_id), sys.intern(str(entry.parent_id))
        self.entries[eid] = entry
        self._keys[eid] = (key, parent)
        self._children[parent][eid] = (entry, key)
        self._by_spiffe_id[key] = (*self._by_spiffe_id.get(key, ()), eid)
        if parent == self._server_key:
            for sel in entry.selectors:
                self._aliases_by_selector[sel].add(eid)
        self._forget_reached_by(entry, parent)

    def remove(self, entry_id: str) -> None:
        old = self.entries.get(entry_id)
        if old is None:
            return
        key, parent = self._keys[entry_id]
        self._forget_reached_by(old, parent)
        del self.entries[entry_id], self._keys[entry_id]
        for memo in self._memos.values():
            memo.pop(entry_id, None)
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.pop(entry_id, None)
            if not siblings:
                del self._children[parent]
        holders = tuple(e for e in self._by_spiffe_id.get(key, ()) if e != entry_id)
        if holders:
            self._by_spiffe_id[key] = holders
        else:
            self._by_spiffe_id.pop(key, None)
        if parent == self._server_key:
            for sel in old.selectors:
                _discard(self._aliases_by_selector, sel, entry_id)

    def entries_with_spiffe_id(self, spiffe_id: SpiffeId) -> list[RegistrationEntry]:
        return [self.entries[eid] for eid in sorted(self._by_spiffe_id.get(str(spiffe_id), ()))]

    def derived(
        self, entries: Iterable[RegistrationEntry], make: Callable[[RegistrationEntry], T]
    ) -> list[T]:
        """``make(entry)`` for each entry, remembered until the entry changes or goes."""
        memo = self._memos.setdefault(make, {})
        out: list[T] = []
        for entry in entries:
            hit = memo.get(entry.entry_id)
            if hit is None or hit[0] is not entry:
                hit = memo[entry.entry_id] = (entry, make(entry))
            out.append(hit[1])
        return out

    # ---- agents -----------------------------------------------------------------------------

    def set_node_selectors(self, node_id: SpiffeId, selectors: Iterable[Selector]) -> None:
        key = str(node_id)
        for sel in self._node_selectors.pop(key, frozenset()):
            _discard(self._agents_by_selector, sel, key)
        held = frozenset(selectors)
        if held:
            self._node_selectors[key] = held
            for sel in held:
                self._agents_by_selector[sel].add(key)
        self._drop(key)

    def matching_aliases(self, agent_id: SpiffeId) -> list[RegistrationEntry]:
        """Node-alias entries whose selectors are all among the agent's node selectors."""
        held = self._node_selectors.get(str(agent_id), frozenset())
        # An alias matches only if it has at least one of the agent's selectors: candidates
        # come from the index, then each is checked whole (every selector must be held).
        candidates: set[str] = set()
        for sel in held:
            candidates.update(self._aliases_by_selector.get(sel, ()))
        found = (self.entries[eid] for eid in sorted(candidates))
        return [alias for alias in found if alias.selectors and held.issuperset(alias.selectors)]

    def _agents_matching(self, alias_selectors: tuple[Selector, ...]) -> list[str]:
        if not alias_selectors:
            return []
        holders = [self._agents_by_selector.get(sel, set()) for sel in alias_selectors]
        fewest = min(holders, key=len)
        return [a for a in fewest if self._node_selectors[a].issuperset(alias_selectors)]

    # ---- answers ----------------------------------------------------------------------------

    def forget_answers(self) -> None:
        self._answers.clear()

    def answer(self, agent_id: SpiffeId, now: int) -> Answer:
        key = str(agent_id)
        found = self._answers.get(key)
        if found is None or not found.holds_at(now):
            entries = self._compute(agent_id, key, now)
            expiries = [e.expires_at for e in entries if e.expires_at]
            found = self._answers[key] = Answer(tuple(entries), now, min(expiries, default=0))
        return found

    def _compute(self, agent_id: SpiffeId, key: str, now: int) -> list[RegistrationEntry]:
        children = self._children
        queue = [key, *(str(alias.spiffe_id) for alias in self.matching_aliases(agent_id))]
        visited: set[str] = set()
        result: list[RegistrationEntry] = []
        # Every entry has one parent and every parent is visited once, so no entry is seen
        # twice; only IDs that parent something are queued.
        while queue:
            parent = queue.pop()
            if parent in visited:
                continue
            visited.add(parent)
            for entry, child_key in children.get(parent, {}).values():
                if entry.expires_at and entry.expires_at <= now:
                    continue
                result.append(entry)
                if child_key in children:
                    queue.append(child_key)
        result.sort(key=_ENTRY_ID)
        return result

    def _forget_reached_by(self, entry: RegistrationEntry, parent: str) -> None:
        """Drop the answers of every agent that reaches ``entry`` (parented to ``parent``)."""
        if not self._answers:
            return
        if parent == self._server_key:
            self._forget(self._agents_matching(entry.selectors))
            return
        queue: list[str] = [parent]
        seen: set[str] = set()
        while queue:
            key = queue.pop()
            if key in seen:
                continue
            seen.add(key)
            self._drop(key)  # the agent with this ID, if any
            for eid in self._by_spiffe_id.get(key, ()):
                holder_parent = self._keys[eid][1]
                if holder_parent == self._server_key:
                    self._forget(self._agents_matching(self.entries[eid].selectors))
                else:
                    queue.append(holder_parent)

    def _forget(self, agents: Iterable[str]) -> None:
        for agent in agents:
            self._drop(agent)

    def _drop(self, key: str) -> None:
        if self._answers.pop(key, None) is not None and self.on_reach is not None:
            self.on_reach(key)


def _discard(index: dict[K, set[V]], key: K, item: V) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del index[key]
