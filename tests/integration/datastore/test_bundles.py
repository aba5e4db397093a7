"""Bundles: CRUD, paging, concurrent read-modify-write, delete modes."""

from __future__ import annotations

import asyncio

import pytest
from datastore_builders import entry

from plastron.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from plastron.server.datastore.store import SqlDataStore
from plastron.spiffe.ids import TrustDomain

A, B, C = TrustDomain("a.org"), TrustDomain("b.org"), TrustDomain("c.org")


async def test_create_fetch_set_list_count(ds: SqlDataStore) -> None:
    await ds.create_bundle(A, b"\x00a")
    with pytest.raises(AlreadyExists, match=r"a\.org"):
        await ds.create_bundle(A, b"again")
    assert await ds.fetch_bundle(A) == b"\x00a"
    assert await ds.fetch_bundle(B) is None
    await ds.set_bundle(B, b"b1")
    await ds.set_bundle(B, b"b2")
    await ds.set_bundle(C, b"c")
    assert await ds.fetch_bundle(B) == b"b2"
    assert await ds.count_bundles() == 3
    page, token = await ds.list_bundles(page_size=2)
    assert page == [(A, b"\x00a"), (B, b"b2")]
    rest, token = await ds.list_bundles(page_size=2, page_token=token)
    assert rest == [(C, b"c")] and token == ""
    assert (await ds.list_bundles())[0] == page + rest


async def test_large_bundle_round_trips_and_oversize_is_rejected(ds: SqlDataStore) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: beyond MySQL's plain BLOB
    await ds.set_bundle(A, big)
    assert await ds.fetch_bundle(A) == big
    with pytest.raises(InvalidArgument, match="larger than"):
        await ds.set_bundle(A, b"x" * ((8 << 20) + 1))


async def test_update_bundle_concurrent_appends_all_land(ds: SqlDataStore) -> None:
    def append(tag: bytes):  # type: ignore[no-untyped-def]
        def fn(current: bytes | None) -> bytes:
            return (current or b"") + tag + b";"

        return fn

    tags = [f"k{i}".encode() for i in range(8)]
    await asyncio.gather(*(ds.update_bundle(A, append(t)) for t in tags))
    stored = await ds.fetch_bundle(A)
    assert stored is not None
    assert sorted(stored.split(b";")[:-1]) == sorted(tags)


async def test_update_bundle_failure_writes_nothing(ds: SqlDataStore) -> None:
    await ds.set_bundle(A, b"orig")

    def boom(current: bytes | None) -> bytes:
        raise InvalidArgument("refused")

    with pytest.raises(InvalidArgument, match="refused"):
        await ds.update_bundle(A, boom)
    assert await ds.fetch_bundle(A) == b"orig"


async def test_delete_modes(ds: SqlDataStore) -> None:
    for td in (A, B):
        await ds.create_bundle(td, b"x")
    fed = await ds.create_entry(entry("/fed", "t:1", federates_with=(A, B)))
    other = await ds.create_entry(entry("/other", "t:2"))
    with pytest.raises(FailedPrecondition, match=r"a\.org"):
        await ds.delete_bundle(A, "restrict")
    assert await ds.fetch_bundle(A) == b"x"
    events_before = (await ds.latest_event_ids())[0]

    await ds.delete_bundle(A, "dissociate")
    assert await ds.fetch_bundle(A) is None
    after = await ds.fetch_entry(fed.entry_id)
    assert after is not None and after.federates_with == (B,)
    assert after.revision_number == fed.revision_number + 1
    assert [e for _, e in await ds.list_entry_events(events_before, 10)] == [fed.entry_id]

    await ds.delete_bundle(B, "delete")
    assert await ds.fetch_entry(fed.entry_id) is None
    assert await ds.list_all_entries() == [other]
    with pytest.raises(NotFound):
        await ds.delete_bundle(B)
    with pytest.raises(InvalidArgument, match="mode"):
        await ds.delete_bundle(C, "cascade")  # type: ignore[arg-type]
