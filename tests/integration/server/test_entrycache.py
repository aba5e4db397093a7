"""The authorized-entry cache against a real SQLite datastore: aliases, recursion, cycles,
and convergence through change events (as a second server sharing the database would see)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from plastron.clock import ManualClock
from plastron.records import AttestedNode, RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")
AGENT = SpiffeId.parse("spiffe://example.org/spire/agent/x/1")
OTHER = SpiffeId.parse("spiffe://example.org/spire/agent/x/2")
SERVER = SpiffeId.parse("spiffe://example.org/spire/server")


def sid(path: str) -> SpiffeId:
    return SpiffeId(TD, path)


def e(spiffe: SpiffeId, parent: SpiffeId, *sels: str) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="",
        spiffe_id=spiffe,
        parent_id=parent,
        selectors=tuple(Selector.parse(s) for s in sels) or (Selector("unix", "uid:0"),),
    )


async def test_aliases_recursion_cycles_and_events(tmp_path: Path) -> None:
    clock = ManualClock()
    ds = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=clock
    )
    try:
        await ds.upsert_attested_node_with_selectors(
            AttestedNode(
                spiffe_id=AGENT,
                attestation_type="x",
                cert_serial="1",
                cert_not_after=0,
                selectors=(Selector("x", "rack:7"), Selector("x", "zone:a")),
            )
        )
        alias = await ds.create_entry(e(sid("/rack7"), SERVER, "x:rack:7"))
        not_mine = await ds.create_entry(e(sid("/rack8"), SERVER, "x:rack:8"))
        direct = await ds.create_entry(e(sid("/direct"), AGENT))
        via_alias = await ds.create_entry(e(sid("/svc"), sid("/rack7")))
        nested = await ds.create_entry(e(sid("/svc/child"), sid("/svc")))
        # a cycle: /loop-a parents /loop-b which parents /loop-a, reachable from the agent
        loop_a = await ds.create_entry(e(sid("/loop-a"), AGENT, "unix:uid:9"))
        loop_b = await ds.create_entry(e(sid("/loop-b"), sid("/loop-a")))
        loop_a2 = await ds.create_entry(e(sid("/loop-a"), sid("/loop-b"), "unix:uid:10"))
        await ds.create_entry(e(sid("/elsewhere"), OTHER))
        await ds.create_entry(e(sid("/r8svc"), not_mine.spiffe_id))

        cache = AuthorizedEntryCache(TD, ds, clock)
        await cache.rebuild()
        got = {x.entry_id for x in cache.authorized_entries(AGENT)}
        want = {direct, via_alias, nested, loop_a, loop_b, loop_a2}
        assert got == {w.entry_id for w in want}
        assert alias.entry_id not in got
        assert cache.authorized_entry(AGENT, direct.entry_id) is not None
        assert cache.authorized_entry(OTHER, direct.entry_id) is None

        # a second cache (another server) sees changes made elsewhere through events
        other_cache = AuthorizedEntryCache(TD, ds, clock)
        await other_cache.rebuild()
        added = await ds.create_entry(e(sid("/late"), AGENT))
        await ds.delete_entry(direct.entry_id)
        assert await other_cache.refresh()
        ids = {x.entry_id for x in other_cache.authorized_entries(AGENT)}
        assert added.entry_id in ids and direct.entry_id not in ids

        # node selector change moves the agent out of the alias
        await ds.set_node_selectors(AGENT, (Selector("x", "rack:8"),))
        await other_cache.refresh()
        ids = {x.entry_id for x in other_cache.authorized_entries(AGENT)}
        assert via_alias.entry_id not in ids
        assert any(x.spiffe_id == sid("/r8svc") for x in other_cache.authorized_entries(AGENT))
    finally:
        await ds.close()


async def test_an_alias_needs_all_its_selectors_and_follows_entry_changes(tmp_path: Path) -> None:
    clock = ManualClock()
    ds = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=clock
    )
    try:
        await ds.upsert_attested_node_with_selectors(
            AttestedNode(
                spiffe_id=AGENT,
                attestation_type="x",
                cert_serial="1",
                cert_not_after=0,
                selectors=(Selector("x", "rack:7"), Selector("x", "zone:a")),
            )
        )
        both = await ds.create_entry(e(sid("/r7a"), SERVER, "x:rack:7", "x:zone:a"))
        # shares rack:7 with the agent but also needs zone:b, which the agent lacks
        await ds.create_entry(e(sid("/r7b"), SERVER, "x:rack:7", "x:zone:b"))
        under_both = await ds.create_entry(e(sid("/svc-a"), sid("/r7a")))
        under_partial = await ds.create_entry(e(sid("/svc-b"), sid("/r7b")))

        cache = AuthorizedEntryCache(TD, ds, clock)
        await cache.rebuild()
        assert [a.entry_id for a in cache.matching_aliases(AGENT)] == [both.entry_id]
        got = {x.entry_id for x in cache.authorized_entries(AGENT)}
        assert got == {under_both.entry_id}
        assert under_partial.entry_id not in got

        # the alias loses a selector the agent has, and gains one it lacks: no longer its alias
        await ds.delete_entry(both.entry_id)
        moved = await ds.create_entry(e(sid("/r7a"), SERVER, "x:rack:7", "x:zone:c"))
        assert await cache.refresh()
        assert cache.matching_aliases(AGENT) == []
        assert cache.authorized_entries(AGENT) == []
        await ds.delete_entry(moved.entry_id)
        await ds.create_entry(e(sid("/r7a"), SERVER, "x:zone:a"))
        assert await cache.refresh()
        assert {x.entry_id for x in cache.authorized_entries(AGENT)} == {under_both.entry_id}
    finally:
        await ds.close()


async def test_a_repeated_lookup_drops_an_entry_once_it_expires(tmp_path: Path) -> None:
    clock = ManualClock()
    ds = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=clock
    )
    try:
        now = int(clock.now().timestamp())
        short = RegistrationEntry(
            entry_id="",
            spiffe_id=sid("/short"),
            parent_id=AGENT,
            selectors=(Selector("unix", "uid:1"),),
            expires_at=now + 60,
        )
        short = await ds.create_entry(short)
        child = await ds.create_entry(e(sid("/short/child"), sid("/short")))
        lasting = await ds.create_entry(e(sid("/lasting"), AGENT))
        cache = AuthorizedEntryCache(TD, ds, clock)
        await cache.rebuild()
        all_three = {short.entry_id, child.entry_id, lasting.entry_id}
        assert {x.entry_id for x in cache.authorized_entries(AGENT)} == all_three
        assert {x.entry_id for x in cache.authorized_entries(AGENT)} == all_three

        by_id = cache.authorized_entries_by_id(AGENT)  # what a batch checks its items against
        assert set(by_id) == all_three and by_id[child.entry_id] == child

        clock.advance(dt.timedelta(seconds=60))  # nothing changed in the datastore
        assert [x.entry_id for x in cache.authorized_entries(AGENT)] == [lasting.entry_id]
        assert cache.authorized_entry(AGENT, child.entry_id) is None
        assert list(cache.authorized_entries_by_id(AGENT)) == [lasting.entry_id]

        clock.advance(dt.timedelta(seconds=-30))  # a clock set back sees it alive again
        assert {x.entry_id for x in cache.authorized_entries(AGENT)} == all_three

        added = await ds.create_entry(e(sid("/added"), AGENT))
        await cache.refresh()
        assert set(cache.authorized_entries_by_id(AGENT)) == {*all_three, added.entry_id}
        assert cache.authorized_entry(AGENT, added.entry_id) == added
        with pytest.raises(TypeError):  # the cache's own answer: nobody may change it
            cache.authorized_entries_by_id(AGENT)["x"] = added  # type: ignore[index]
    finally:
        await ds.close()


async def test_remembered_agents_are_forgotten_on_their_node_events(tmp_path: Path) -> None:
    clock = ManualClock()
    ds = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=clock
    )
    try:
        node = AttestedNode(
            spiffe_id=AGENT, attestation_type="x", cert_serial="1", cert_not_after=0
        )
        other = AttestedNode(
            spiffe_id=OTHER, attestation_type="x", cert_serial="2", cert_not_after=0
        )
        await ds.upsert_attested_node_with_selectors(node)
        await ds.upsert_attested_node_with_selectors(other)
        cache = AuthorizedEntryCache(TD, ds, clock)
        await cache.rebuild()
        cache.remember_node(node, cache.node_epoch)
        cache.remember_node(other, cache.node_epoch)
        assert cache.attested_node(AGENT) == node

        await ds.update_attested_node(AGENT, cert_serial="")  # banned, by any server
        await cache.refresh()
        assert cache.attested_node(AGENT) is None
        assert cache.attested_node(OTHER) == other  # no event of its own: kept

        # A read that started before node events were applied may predate them: not kept.
        epoch = cache.node_epoch
        await ds.update_attested_node(AGENT, cert_serial="3")
        await cache.refresh()
        cache.remember_node(node, epoch)
        assert cache.attested_node(AGENT) is None

        await cache.rebuild()
        assert cache.attested_node(OTHER) is None
    finally:
        await ds.close()
