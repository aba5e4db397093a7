"""Which open EntryNotifier/Watch streams a change wakes: the entry cache over a real SQLite
datastore, changes made through the datastore and applied as a second server would (events).
Also that a full reload wakes nobody and leaves every watched agent noticed again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plastron.clock import ManualClock
from plastron.datastore import DataStore
from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.server.entrywatchers import EntryWatchers, Watcher
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x/1")
OTHER = SpiffeId.parse("spiffe://example.org/spire/agent/x/2")
SERVER = SpiffeId.parse("spiffe://example.org/spire/server")


def entry(path: str, parent: SpiffeId, *sels: str) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="",
        spiffe_id=SpiffeId(TD, path),
        parent_id=parent,
        selectors=tuple(Selector.parse(s) for s in sels) or (Selector("unix", "uid:0"),),
    )


def node(agent: SpiffeId, *sels: str) -> AttestedNode:
    return AttestedNode(
        spiffe_id=agent,
        attestation_type="x",
        cert_serial="1",
        cert_not_after=0,
        selectors=tuple(Selector.parse(s) for s in sels),
    )


@dataclass
class World:
    ds: DataStore
    cache: AuthorizedEntryCache
    watchers: EntryWatchers

    async def applied(self) -> None:
        assert await self.cache.refresh()

    def watch(self, agent: SpiffeId) -> Watcher:
        return self.watchers.open(agent, "1")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock()
    ds = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=clock
    )
    try:
        await ds.upsert_attested_node_with_selectors(node(AGENT, "x:rack:7"))
        await ds.upsert_attested_node_with_selectors(node(OTHER, "x:rack:8"))
        cache = AuthorizedEntryCache(TD, ds, clock)
        await cache.rebuild()
        yield World(ds, cache, EntryWatchers(cache))
    finally:
        await ds.close()


def woken(*watchers: Watcher) -> list[bool]:
    return [w.pending for w in watchers]


async def test_an_entry_under_the_agent_wakes_only_that_agent(world: World) -> None:
    mine, other = world.watch(AGENT), world.watch(OTHER)
    await world.ds.create_entry(entry("/direct", AGENT))
    await world.applied()
    assert woken(mine, other) == [True, False]
    assert not mine.node_changed


async def test_entries_reached_through_an_alias_and_a_parent_entry_wake_the_agent(
    world: World,
) -> None:
    await world.ds.create_entry(entry("/rack7", SERVER, "x:rack:7"))
    await world.ds.create_entry(entry("/svc", SpiffeId(TD, "/rack7")))
    await world.applied()
    mine, other = world.watch(AGENT), world.watch(OTHER)
    await world.ds.create_entry(entry("/svc/child", SpiffeId(TD, "/svc")))
    await world.applied()
    assert woken(mine, other) == [True, False]


async def test_an_alias_wakes_the_agents_holding_its_selectors(world: World) -> None:
    mine, other = world.watch(AGENT), world.watch(OTHER)
    await world.ds.create_entry(entry("/rack8", SERVER, "x:rack:8"))
    await world.applied()
    assert woken(mine, other) == [False, True]


async def test_a_change_to_the_agents_node_wakes_it_for_a_recheck(world: World) -> None:
    mine, other = world.watch(AGENT), world.watch(OTHER)
    await world.ds.update_attested_node(AGENT, cert_serial="")  # banned
    await world.applied()
    assert woken(mine, other) == [True, False]
    assert mine.node_changed


async def test_a_pushed_watcher_is_reached_through_its_new_entries(world: World) -> None:
    mine = world.watch(AGENT)
    created = await world.ds.create_entry(entry("/svc", AGENT))
    await world.applied()
    assert mine.pending
    # What the stream does when it pushes: keep the agent's answer of now.
    mine.pending = False
    world.cache.keep_answer(AGENT)
    await world.ds.create_entry(entry("/svc/child", created.spiffe_id))
    await world.applied()
    assert mine.pending


async def test_an_agents_oldest_stream_is_replaced_and_closed_streams_leave(
    world: World,
) -> None:
    first, second, third = world.watch(AGENT), world.watch(AGENT), world.watch(AGENT)
    assert [first.replaced, second.replaced, third.replaced] == [True, False, False]
    assert first.wake.is_set()
    assert len(world.watchers) == 2
    for watcher in (first, second, third):
        world.watchers.close(watcher)
    assert len(world.watchers) == 0
    await world.ds.create_entry(entry("/direct", AGENT))
    await world.applied()
    assert woken(first, second, third) == [False, False, False]


async def test_the_full_reload_pushes_nobody_and_later_changes_still_wake(world: World) -> None:
    """The hourly rebuild would otherwise make every connected agent sync at the same moment."""
    mine = world.watch(AGENT)
    await world.ds.create_entry(entry("/direct", AGENT))
    await world.cache.rebuild()
    assert not mine.pending
    await world.ds.create_entry(entry("/later", AGENT))
    await world.applied()
    assert mine.pending
