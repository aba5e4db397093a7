"""Attested nodes and node selectors."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest
from datastore_builders import node, sel, sid

from plastron.errors import AlreadyExists, InvalidArgument, NotFound
from plastron.records import AttestedNode
from plastron.server.datastore.store import SqlDataStore


async def test_create_fetch_update_delete(ds: SqlDataStore) -> None:
    n = node("a", "k:1", "k:2", node_data=b"\x00data", agent_version="1.2", can_reattest=True)
    assert await ds.create_attested_node(n) == n
    assert await ds.fetch_attested_node(n.spiffe_id) == n
    with pytest.raises(AlreadyExists, match="join_token/a"):
        await ds.create_attested_node(n)
    updated = await ds.update_attested_node(
        n.spiffe_id, new_cert_serial="s2", new_cert_not_after=5, selectors=(sel("k:3"),)
    )
    assert updated.new_cert_serial == "s2" and updated.cert_serial == n.cert_serial
    assert updated.selectors == (sel("k:3"),)
    assert await ds.fetch_attested_node(n.spiffe_id) == updated
    with pytest.raises(InvalidArgument, match="entry_id"):
        await ds.update_attested_node(n.spiffe_id, entry_id="x")
    with pytest.raises(NotFound):
        await ds.update_attested_node(sid("/spire/agent/none"), cert_serial="x")
    assert await ds.delete_attested_node(n.spiffe_id) == updated
    assert await ds.fetch_attested_node(n.spiffe_id) is None
    assert await ds.get_node_selectors(n.spiffe_id) == ()
    with pytest.raises(NotFound):
        await ds.delete_attested_node(n.spiffe_id)


async def test_ban_is_empty_serial(ds: SqlDataStore) -> None:
    n = await ds.create_attested_node(node("a"))
    banned = await ds.update_attested_node(n.spiffe_id, cert_serial="", new_cert_serial="")
    assert banned.banned
    assert (await ds.fetch_attested_node(n.spiffe_id)).banned  # type: ignore[union-attr]


async def test_rejects_oversize_inputs(ds: SqlDataStore) -> None:
    with pytest.raises(InvalidArgument, match="node_data"):
        await ds.create_attested_node(node("a", node_data=b"x" * ((1 << 20) + 1)))
    with pytest.raises(InvalidArgument, match="cert_serial"):
        await ds.create_attested_node(node("a", cert_serial="s" * 256))
    with pytest.raises(InvalidArgument, match="selectors"):
        await ds.set_node_selectors(sid("/n"), [sel(f"k:{i}") for i in range(1001)])
    assert await ds.count_attested_nodes() == 0


async def test_node_selectors(ds: SqlDataStore) -> None:
    a, b = sid("/spire/agent/x/a"), sid("/spire/agent/x/b")
    await ds.set_node_selectors(a, [sel("k:1"), sel("k:2"), sel("k:1")])
    await ds.set_node_selectors(b, [sel("k:3")])
    assert await ds.get_node_selectors(a) == (sel("k:1"), sel("k:2"))
    await ds.set_node_selectors(a, [sel("k:9")])
    assert await ds.list_node_selectors() == {a: (sel("k:9"),), b: (sel("k:3"),)}
    await ds.set_node_selectors(b, [])
    assert await ds.list_node_selectors() == {a: (sel("k:9"),)}


async def test_upsert_with_selectors(ds: SqlDataStore) -> None:
    n = node("a", "k:1", node_data=b"first")
    assert await ds.upsert_attested_node_with_selectors(n) == n
    again = node("a", "k:2", cert_serial="new", node_data=b"second")
    assert await ds.upsert_attested_node_with_selectors(again) == again
    assert await ds.fetch_attested_node(n.spiffe_id) == again
    assert await ds.count_attested_nodes() == 1


async def test_concurrent_first_upserts_both_succeed(ds: SqlDataStore) -> None:
    results = await asyncio.gather(
        ds.upsert_attested_node_with_selectors(node("r", "k:1", cert_serial="one")),
        ds.upsert_attested_node_with_selectors(node("r", "k:2", cert_serial="two")),
    )
    stored = await ds.fetch_attested_node(results[0].spiffe_id)
    assert stored in results
    assert await ds.count_attested_nodes() == 1


async def test_admit_writes_what_build_decides_from_the_stored_node(ds: SqlDataStore) -> None:
    seen: list[AttestedNode | None] = []

    def keep_version(current: AttestedNode | None) -> AttestedNode:
        seen.append(current)
        version = current.agent_version if current else ""
        return node("m", "k:2", "k:1", cert_serial=f"s{len(seen)}", agent_version=version)

    first = await ds.admit_attested_node(sid("/spire/agent/join_token/m"), keep_version)
    assert seen == [None] and first.selectors == (sel("k:2"), sel("k:1"))
    await ds.update_attested_node(first.spiffe_id, agent_version="1.9")
    events_before = len(await ds.list_node_events(0, 100))
    second = await ds.admit_attested_node(first.spiffe_id, keep_version)
    assert seen[1] == dataclasses.replace(first, agent_version="1.9")
    assert (second.cert_serial, second.agent_version) == ("s2", "1.9")
    assert await ds.fetch_attested_node(first.spiffe_id) == second
    assert len(await ds.list_node_events(0, 100)) == events_before + 1

    def new_selectors(current: AttestedNode | None) -> AttestedNode:
        return node("m", "k:3", "k:3", cert_serial="s3")

    third = await ds.admit_attested_node(first.spiffe_id, new_selectors)
    assert third.selectors == (sel("k:3"),)
    assert await ds.get_node_selectors(first.spiffe_id) == (sel("k:3"),)
    assert await ds.fetch_attested_node(first.spiffe_id) == third


async def test_admit_refused_by_build_writes_nothing(ds: SqlDataStore) -> None:
    stored = await ds.create_attested_node(node("b", "k:1", cert_serial=""))
    events_before = await ds.list_node_events(0, 100)

    def refuse_banned(current: AttestedNode | None) -> AttestedNode:
        if current is not None and current.banned:
            raise NotFound("banned")
        return node("b", "k:9")

    with pytest.raises(NotFound, match="banned"):
        await ds.admit_attested_node(stored.spiffe_id, refuse_banned)
    with pytest.raises(InvalidArgument, match="join_token/other"):
        await ds.admit_attested_node(stored.spiffe_id, lambda _: node("other"))
    assert await ds.fetch_attested_node(stored.spiffe_id) == stored
    assert await ds.list_node_events(0, 100) == events_before


async def test_concurrent_first_admits_let_build_see_the_winner(ds: SqlDataStore) -> None:
    def first_only(serial: str) -> Callable[[AttestedNode | None], AttestedNode]:
        def build(current: AttestedNode | None) -> AttestedNode:
            if current is not None:
                raise AlreadyExists(f"{serial}: taken by {current.cert_serial}")
            return node("t", cert_serial=serial)

        return build

    target = sid("/spire/agent/join_token/t")
    results = await asyncio.gather(
        ds.admit_attested_node(target, first_only("one")),
        ds.admit_attested_node(target, first_only("two")),
        return_exceptions=True,
    )
    written = [r for r in results if isinstance(r, AttestedNode)]
    refused = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(written) == 1 and len(refused) == 1, results
    assert await ds.fetch_attested_node(target) == written[0]


async def test_list_filters_and_paging(ds: SqlDataStore) -> None:
    a = await ds.create_attested_node(node("a", "k:1", "k:2", cert_not_after=100))
    b = await ds.create_attested_node(node("b", "k:1", attestation_type="tpm", can_reattest=True))
    c = await ds.create_attested_node(node("c", "k:3", cert_serial=""))

    async def ids(**kw: object) -> list[AttestedNode]:
        found, _ = await ds.list_attested_nodes(**kw)  # type: ignore[arg-type]
        assert await ds.count_attested_nodes(**kw) == len(found)  # type: ignore[arg-type]
        return found

    assert await ids() == [a, b, c]
    assert await ids(by_attestation_type="tpm") == [b]
    assert await ids(by_banned=True) == [c]
    assert await ids(by_banned=False) == [a, b]
    assert await ids(by_can_reattest=True) == [b]
    assert await ids(by_expires_before=101) == [a]
    assert await ids(by_selectors=((sel("k:1"),), "exact")) == [b]
    assert await ids(by_selectors=((sel("k:1"), sel("k:2")), "superset")) == [a]
    assert await ids(by_selectors=((sel("k:1"), sel("k:2")), "subset")) == [a, b]
    assert await ids(by_selectors=((sel("k:1"), sel("k:3")), "any")) == [a, b, c]
    page, token = await ds.list_attested_nodes(page_size=2)
    assert page == [a, b] and token
    page, token = await ds.list_attested_nodes(page_size=2, page_token=token)
    assert page == [c] and token == ""


async def test_every_node_write_records_an_event(ds: SqlDataStore) -> None:
    n = await ds.create_attested_node(node("a", "k:1"))
    await ds.update_attested_node(n.spiffe_id, agent_version="2")
    await ds.set_node_selectors(n.spiffe_id, [sel("k:2")])
    await ds.upsert_attested_node_with_selectors(n)
    await ds.delete_attested_node(n.spiffe_id)
    events = await ds.list_node_events(0, 100)
    assert [s for _, s in events] == [str(n.spiffe_id)] * 5
    assert (await ds.latest_event_ids())[1] == events[-1][0]
    with pytest.raises(AlreadyExists):
        await ds.create_attested_node(node("b"))
        await ds.create_attested_node(node("b"))
    assert len(await ds.list_node_events(0, 100)) == 6  # the failed create left none


async def test_prune_attested_nodes_by_type_expiry_and_ban(ds: SqlDataStore) -> None:
    """Only nodes of the given types whose SVID expired before the cutoff go, with their
    selectors and a change event each; a banned node and other types stay."""
    iam = [node(f"t{i}", "aws_iam:role:r", attestation_type="aws_iam", cert_not_after=100 + i)
           for i in range(600)]  # fmt: skip
    for n in iam:
        await ds.create_attested_node(n)
    await ds.create_attested_node(node("unique", "k:1", cert_not_after=50))
    await ds.update_attested_node(iam[0].spiffe_id, cert_serial="", new_cert_serial="")
    before = len(await ds.list_node_events(0, 10_000))
    assert await ds.prune_attested_nodes(650, []) == 0
    assert await ds.prune_attested_nodes(650, ["aws_iam"]) == 549  # t1..t549 (t0 is banned)
    left = {n.spiffe_id for n in (await ds.list_attested_nodes())[0]}
    assert left == {iam[0].spiffe_id, node("unique").spiffe_id} | {n.spiffe_id for n in iam[550:]}
    assert len(await ds.list_node_selectors()) == 2 + 50
    assert len(await ds.list_node_events(0, 10_000)) == before + 549
