"""The entry index keeps each agent's answer until a change reaches it: kept answers must
always equal a fresh computation, and answers a change cannot reach are kept."""

from __future__ import annotations

import random
import tracemalloc

from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.entryindex import EntryIndex
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id

TD = TrustDomain("example.org")
SERVER = server_id(TD)
AGENTS = [SpiffeId(TD, f"/spire/agent/x/{i}") for i in range(4)]
NODE_SELECTORS = [Selector("x", f"s{i}") for i in range(4)]
# IDs entries take and parent one another with (cycles included), besides agents and server
IDS = [SpiffeId(TD, f"/w/{i}") for i in range(6)]
NOW = 1_000


def entry(eid: str, spiffe: SpiffeId, parent: SpiffeId, *sels: Selector) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id=eid, spiffe_id=spiffe, parent_id=parent, selectors=sels or (Selector("u", eid),)
    )


def ids(index: EntryIndex, agent: SpiffeId) -> list[str]:
    return [e.entry_id for e in index.answer(agent, NOW).entries]


def fresh(
    entries: dict[str, RegistrationEntry], nodes: dict[SpiffeId, list[Selector]]
) -> EntryIndex:
    index = EntryIndex(SERVER)
    for e in entries.values():
        index.put(e)
    for node, sels in nodes.items():
        index.set_node_selectors(node, sels)
    return index


def random_entry(rng: random.Random, eid: str) -> RegistrationEntry:
    if rng.random() < 0.25:  # a node alias over one or two node selectors
        sels = rng.sample(NODE_SELECTORS, rng.choice((1, 2)))
        return entry(eid, rng.choice(IDS), SERVER, *sels)
    parent = rng.choice(IDS + AGENTS)
    return entry(eid, rng.choice(IDS), parent)


def test_kept_answers_always_equal_a_fresh_computation() -> None:
    rng = random.Random(7)
    entries: dict[str, RegistrationEntry] = {}
    nodes: dict[SpiffeId, list[Selector]] = {}
    index = EntryIndex(SERVER)
    for step in range(1500):
        roll = rng.random()
        if roll < 0.5:
            eid = f"e{rng.randrange(40)}"  # a new entry, or an update of an existing one
            entries[eid] = random_entry(rng, eid)
            index.put(entries[eid])
        elif roll < 0.75 and entries:
            eid = rng.choice(sorted(entries))
            del entries[eid]
            index.remove(eid)
        else:
            agent = rng.choice(AGENTS)
            nodes[agent] = rng.sample(NODE_SELECTORS, rng.randrange(len(NODE_SELECTORS)))
            index.set_node_selectors(agent, nodes[agent])
        expected = fresh(entries, nodes)
        for agent in AGENTS:
            assert ids(index, agent) == ids(expected, agent), (step, agent)
            by_id = index.answer(agent, NOW).by_id
            assert dict(by_id) == {e.entry_id: e for e in expected.answer(agent, NOW).entries}
        for sid in IDS:  # several entries share each ID: the index's tuple of them follows
            held = sorted(e.entry_id for e in entries.values() if e.spiffe_id == sid)
            assert [e.entry_id for e in index.entries_with_spiffe_id(sid)] == held, (step, sid)


def test_a_change_keeps_the_answers_it_cannot_reach() -> None:
    index = EntryIndex(SERVER)
    a, b = AGENTS[0], AGENTS[1]
    index.set_node_selectors(a, [NODE_SELECTORS[0]])
    index.set_node_selectors(b, [NODE_SELECTORS[1]])
    index.put(entry("alias-a", IDS[0], SERVER, NODE_SELECTORS[0]))
    index.put(entry("under-alias", IDS[1], IDS[0]))
    index.put(entry("b-direct", IDS[2], b))
    kept_a, kept_b = index.answer(a, NOW), index.answer(b, NOW)

    index.put(entry("nested", IDS[3], IDS[1]))  # under a's alias, two levels down
    assert index.answer(b, NOW) is kept_b
    assert [e.entry_id for e in index.answer(a, NOW).entries] == ["nested", "under-alias"]

    kept_a = index.answer(a, NOW)
    index.put(entry("b-more", IDS[4], b))
    assert index.answer(a, NOW) is kept_a
    index.set_node_selectors(b, [NODE_SELECTORS[0], NODE_SELECTORS[1]])  # b now matches alias-a
    assert index.answer(a, NOW) is kept_a
    assert ids(index, b) == ["b-direct", "b-more", "nested", "under-alias"]


def test_an_alias_change_reaches_the_agents_it_matches_before_and_after() -> None:
    index = EntryIndex(SERVER)
    a, b = AGENTS[0], AGENTS[1]
    index.set_node_selectors(a, [NODE_SELECTORS[0]])
    index.set_node_selectors(b, [NODE_SELECTORS[1]])
    index.put(entry("alias", IDS[0], SERVER, NODE_SELECTORS[0]))
    index.put(entry("svc", IDS[1], IDS[0]))
    assert ids(index, a) == ["svc"] and ids(index, b) == []
    index.put(entry("alias", IDS[0], SERVER, NODE_SELECTORS[1]))  # moved from a's to b's
    assert ids(index, a) == [] and ids(index, b) == ["svc"]
    index.remove("alias")
    assert ids(index, b) == []


def test_expired_entries_leave_the_answer_when_they_expire() -> None:
    index = EntryIndex(SERVER)
    a = AGENTS[0]
    expiring = RegistrationEntry(
        entry_id="soon",
        spiffe_id=IDS[0],
        parent_id=a,
        selectors=(Selector("u", "1"),),
        expires_at=NOW + 5,
    )
    index.put(expiring)
    index.put(entry("child", IDS[1], IDS[0]))
    assert ids(index, a) == ["child", "soon"]
    assert [e.entry_id for e in index.answer(a, NOW + 5).entries] == []


def test_answers_by_id_find_every_entry_and_nothing_else() -> None:
    index = EntryIndex(SERVER)
    for i in range(0, 200, 2):  # ids e000, e002, ...: each odd one falls between two
        index.put(entry(f"e{i:03}", SpiffeId(TD, f"/w/{i}"), AGENTS[0]))
    by_id = index.answer(AGENTS[0], NOW).by_id
    assert len(by_id) == 100 and list(by_id) == [f"e{i:03}" for i in range(0, 200, 2)]
    for i in range(-1, 201):
        eid = f"e{i:03}"
        if i % 2 == 0 and 0 <= i < 200:
            assert eid in by_id and by_id[eid].entry_id == eid and by_id.get(eid) is by_id[eid]
        else:
            assert eid not in by_id and by_id.get(eid) is None
    assert "" not in by_id and "z" not in by_id
    assert index.answer(AGENTS[1], NOW).by_id.get("e000") is None  # an agent with none


def test_a_kept_answer_is_its_entries_and_no_map_of_them() -> None:
    index = EntryIndex(SERVER)
    for i in range(100):
        index.put(entry(f"e{i:03}", SpiffeId(TD, f"/w/{i}"), AGENTS[0]))
    index.answer(AGENTS[0], NOW)  # warm-up
    tracemalloc.start()
    try:
        index.forget_answers()
        before = tracemalloc.get_traced_memory()[0]
        index.answer(AGENTS[0], NOW)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The tuple of 100 entries and the Answer: about 1 KiB (a dict by id added 4.6 KiB).
    assert kept < 1536
