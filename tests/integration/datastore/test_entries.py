"""Registration entries: CRUD, uniqueness, filters, paging, events, atomicity."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from datastore_builders import entry, sel, sid

from plastron.clock import ManualClock, to_unix
from plastron.errors import AlreadyExists, InvalidArgument, NotFound
from plastron.records import EntryAlreadyExists, RegistrationEntry
from plastron.server.datastore.store import SqlDataStore
from plastron.spiffe.ids import TrustDomain


async def test_create_generates_id_sets_created_at_and_round_trips(
    ds: SqlDataStore, clock: ManualClock
) -> None:
    await ds.create_bundle(TrustDomain("fed.org"), b"b")
    made = await ds.create_entry(
        entry(
            "/web",
            "unix:uid:1000",
            "unix:gid:1000",
            x509_svid_ttl=60,
            jwt_svid_ttl=30,
            federates_with=(TrustDomain("fed.org"),),
            admin=True,
            downstream=True,
            expires_at=5,
            dns_names=("web.example.org", "web"),
            store_svid=True,
            hint="h1",
            revision_number=7,
        )
    )
    assert len(made.entry_id) == 36
    assert made.created_at == to_unix(clock.now())
    assert made.revision_number == 0
    assert await ds.fetch_entry(made.entry_id) == made
    assert await ds.list_all_entries() == [made]


async def test_create_keeps_given_id_and_rejects_bad_ids(ds: SqlDataStore) -> None:
    made = await ds.create_entry(entry("/a", "unix:uid:1", entry_id="my-id"))
    assert made.entry_id == "my-id"
    with pytest.raises(InvalidArgument, match="entry_id"):
        await ds.create_entry(entry("/b", "unix:uid:1", entry_id="x" * 256))
    with pytest.raises(InvalidArgument, match="printable ASCII"):
        await ds.create_entry(entry("/b", "unix:uid:1", entry_id="bad id"))
    with pytest.raises(AlreadyExists, match="my-id"):
        await ds.create_entry(entry("/other", "unix:uid:2", entry_id="my-id"))


async def test_create_rejects_bad_fields(ds: SqlDataStore) -> None:
    with pytest.raises(InvalidArgument, match="no selectors"):
        await ds.create_entry(entry("/a"))
    with pytest.raises(InvalidArgument, match="hint"):
        await ds.create_entry(entry("/a", "unix:uid:1", hint="h" * 1025))
    with pytest.raises(InvalidArgument, match="x509_svid_ttl"):
        await ds.create_entry(entry("/a", "unix:uid:1", x509_svid_ttl=-1))
    with pytest.raises(InvalidArgument, match="dns name"):
        await ds.create_entry(entry("/a", "unix:uid:1", dns_names=("d" * 256,)))
    with pytest.raises(InvalidArgument, match="more than 1000"):
        await ds.create_entry(entry("/a", *(f"unix:uid:{i}" for i in range(1001))))
    with pytest.raises(NotFound, match=r"nowhere\.org"):
        await ds.create_entry(
            entry("/a", "unix:uid:1", federates_with=(TrustDomain("nowhere.org"),))
        )
    assert await ds.count_entries() == 0
    assert await ds.list_entry_events(0, 100) == []


async def test_similar_entry_is_rejected_with_the_existing_one(ds: SqlDataStore) -> None:
    first = await ds.create_entry(entry("/a", "unix:uid:1", "unix:gid:2"))
    with pytest.raises(EntryAlreadyExists) as caught:
        await ds.create_entry(entry("/a", "unix:gid:2", "unix:uid:1", "unix:uid:1"))
    assert caught.value.existing == first
    # Same IDs with a different selector set, or another parent, are different entries.
    await ds.create_entry(entry("/a", "unix:uid:1"))
    await ds.create_entry(entry("/a", "unix:uid:1", "unix:gid:2", parent="/spire/agent/x/1"))
    assert await ds.count_entries() == 3


async def test_concurrent_identical_creates_one_wins(ds: SqlDataStore) -> None:
    results = await asyncio.gather(
        *(ds.create_entry(entry("/race", "unix:uid:7")) for _ in range(2)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, RegistrationEntry)]
    failed = [r for r in results if isinstance(r, EntryAlreadyExists)]
    assert len(made) == 1 and len(failed) == 1
    assert failed[0].existing == made[0]
    assert await ds.count_entries() == 1
    assert len(await ds.list_entry_events(0, 100)) == 1


async def test_create_entries_gives_per_item_results(ds: SqlDataStore) -> None:
    results = await ds.create_entries(
        [
            entry("/1", "unix:uid:1"),
            entry("/1", "unix:uid:1"),  # duplicate of the first, inside one batch
            entry("/2"),  # invalid: no selectors
            entry("/3", "unix:uid:3", federates_with=(TrustDomain("missing.org"),)),
            entry("/4", "unix:uid:4"),
        ]
    )
    assert isinstance(results[0], RegistrationEntry)
    assert isinstance(results[1], EntryAlreadyExists) and results[1].existing == results[0]
    assert isinstance(results[2], InvalidArgument)
    assert isinstance(results[3], NotFound)
    assert isinstance(results[4], RegistrationEntry)
    stored = await ds.list_all_entries()
    assert stored == [results[0], results[4]]
    assert [e for _, e in await ds.list_entry_events(0, 100)] == [
        results[0].entry_id,
        results[4].entry_id,
    ]


async def test_fetch_entries(ds: SqlDataStore) -> None:
    a = await ds.create_entry(entry("/a", "unix:uid:1"))
    b = await ds.create_entry(entry("/b", "unix:uid:2"))
    assert await ds.fetch_entries([a.entry_id, "nope", b.entry_id]) == {
        a.entry_id: a,
        b.entry_id: b,
    }
    assert await ds.fetch_entry("nope") is None


async def test_update_with_mask_bumps_revision(ds: SqlDataStore) -> None:
    await ds.create_bundle(TrustDomain("fed.org"), b"b")
    made = await ds.create_entry(entry("/a", "unix:uid:1", hint="old", x509_svid_ttl=10))
    change = dataclasses.replace(
        made,
        hint="new",
        x509_svid_ttl=99,
        selectors=(sel("unix:uid:2"),),
        federates_with=(TrustDomain("fed.org"),),
        dns_names=("x.org",),
    )
    updated = await ds.update_entry(change, {"hint", "selectors", "federates_with", "dns_names"})
    assert updated.hint == "new" and updated.x509_svid_ttl == 10
    assert updated.selectors == (sel("unix:uid:2"),)
    assert updated.federates_with == (TrustDomain("fed.org"),)
    assert updated.dns_names == ("x.org",)
    assert updated.revision_number == 1
    assert await ds.fetch_entry(made.entry_id) == updated
    full = await ds.update_entry(dataclasses.replace(change, hint="all"))
    assert full.x509_svid_ttl == 99 and full.revision_number == 2
    assert full.created_at == made.created_at
    with pytest.raises(InvalidArgument, match="revision_number"):
        await ds.update_entry(change, {"revision_number"})
    with pytest.raises(NotFound, match="missing"):
        await ds.update_entry(dataclasses.replace(change, entry_id="missing"))


async def test_update_into_a_similar_entry_is_rejected_atomically(ds: SqlDataStore) -> None:
    a = await ds.create_entry(entry("/a", "unix:uid:1"))
    b = await ds.create_entry(entry("/b", "unix:uid:1"))
    events_before = await ds.latest_event_ids()
    with pytest.raises(EntryAlreadyExists) as caught:
        await ds.update_entry(
            dataclasses.replace(b, spiffe_id=sid("/a"), hint="zzz"), {"spiffe_id", "hint"}
        )
    assert caught.value.existing == a
    assert await ds.fetch_entry(b.entry_id) == b  # nothing half-written
    assert await ds.latest_event_ids() == events_before  # and no event for the failed write


async def test_delete_entry_and_entries(ds: SqlDataStore) -> None:
    await ds.create_bundle(TrustDomain("fed.org"), b"b")
    a = await ds.create_entry(
        entry("/a", "unix:uid:1", dns_names=("a",), federates_with=(TrustDomain("fed.org"),))
    )
    b = await ds.create_entry(entry("/b", "unix:uid:2"))
    c = await ds.create_entry(entry("/c", "unix:uid:3"))
    assert await ds.delete_entry(a.entry_id) == a
    with pytest.raises(NotFound):
        await ds.delete_entry(a.entry_id)
    results = await ds.delete_entries([b.entry_id, "nope", c.entry_id])
    assert results[0] == b and results[2] == c and isinstance(results[1], NotFound)
    assert await ds.list_all_entries() == []
    # Children went with them: the same selectors can be reused without a conflict.
    await ds.create_entry(entry("/a", "unix:uid:1"))
    # The bundle is no longer referenced, so a restrict delete succeeds.
    await ds.delete_bundle(TrustDomain("fed.org"), "restrict")


async def test_prune_entries(ds: SqlDataStore) -> None:
    keep = await ds.create_entry(entry("/keep", "unix:uid:1"))  # expires_at 0 = never
    later = await ds.create_entry(entry("/later", "unix:uid:2", expires_at=200))
    await ds.create_entry(entry("/old", "unix:uid:3", expires_at=100))
    assert await ds.prune_entries(150) == 1
    assert await ds.list_all_entries() == [keep, later]


# ---- listing -----------------------------------------------------------------------------------


@pytest.fixture
async def selector_entries(ds: SqlDataStore) -> dict[str, RegistrationEntry]:
    made = {}
    for name, sels in {
        "ab": ("t:a", "t:b"),
        "a": ("t:a",),
        "abc": ("t:a", "t:b", "t:c"),
        "c": ("t:c",),
        "d": ("t:d",),
    }.items():
        made[name] = await ds.create_entry(entry(f"/{name}", *sels))
    return made


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("exact", {"ab"}),
        ("subset", {"ab", "a"}),  # entry's selectors ⊆ {a, b}
        ("superset", {"ab", "abc"}),  # entry's selectors ⊇ {a, b}
        ("any", {"ab", "a", "abc"}),
    ],
)
async def test_list_by_selectors(
    ds: SqlDataStore, selector_entries: dict[str, RegistrationEntry], match: str, expected: set[str]
) -> None:
    found, token = await ds.list_entries(by_selectors=((sel("t:a"), sel("t:b")), match))  # type: ignore[arg-type]
    assert {e.spiffe_id.path[1:] for e in found} == expected
    assert token == ""
    assert await ds.count_entries(by_selectors=((sel("t:a"), sel("t:b")), match)) == len(expected)  # type: ignore[arg-type]


async def test_list_by_selectors_rejects_bad_filters(ds: SqlDataStore) -> None:
    with pytest.raises(InvalidArgument, match="match"):
        await ds.list_entries(by_selectors=((sel("t:a"),), "most"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="at least one"):
        await ds.list_entries(by_selectors=((), "any"))


async def test_list_by_ids_hint_downstream(ds: SqlDataStore) -> None:
    a = await ds.create_entry(entry("/a", "t:1", parent="/spire/agent/x/1", hint="web"))
    b = await ds.create_entry(entry("/b", "t:1", parent="/spire/agent/x/2", downstream=True))
    c = await ds.create_entry(entry("/a", "t:2", parent="/spire/agent/x/2"))
    assert (await ds.list_entries(by_spiffe_id=sid("/a")))[0] == [a, c]
    assert (await ds.list_entries(by_parent_id=sid("/spire/agent/x/2")))[0] == [b, c]
    assert (await ds.list_entries(by_hint="web"))[0] == [a]
    assert (await ds.list_entries(by_downstream=True))[0] == [b]
    assert (await ds.list_entries(by_downstream=False))[0] == [a, c]
    found, _ = await ds.list_entries(by_spiffe_id=sid("/a"), by_parent_id=sid("/spire/agent/x/2"))
    assert found == [c]
    assert await ds.count_entries(by_spiffe_id=sid("/a")) == 2


@pytest.mark.parametrize(
    ("match", "expected"),
    [("exact", {"1"}), ("subset", {"1", "2"}), ("superset", {"1", "3"}), ("any", {"1", "2", "3"})],
)
async def test_list_by_federates_with(ds: SqlDataStore, match: str, expected: set[str]) -> None:
    x, y, z = TrustDomain("x.org"), TrustDomain("y.org"), TrustDomain("z.org")
    for td in (x, y, z):
        await ds.create_bundle(td, b"b")
    await ds.create_entry(entry("/1", "t:1", federates_with=(x, y)))
    await ds.create_entry(entry("/2", "t:1", federates_with=(x,)))
    await ds.create_entry(entry("/3", "t:1", federates_with=(x, y, z)))
    await ds.create_entry(entry("/4", "t:1"))
    found, _ = await ds.list_entries(by_federates_with=((x, y), match))  # type: ignore[arg-type]
    assert {e.spiffe_id.path[1:] for e in found} == expected


async def test_paging(ds: SqlDataStore) -> None:
    made = [await ds.create_entry(entry(f"/p{i}", "t:x", hint="h")) for i in range(7)]
    seen: list[RegistrationEntry] = []
    token = ""
    pages = 0
    while True:
        page, token = await ds.list_entries(by_hint="h", page_size=3, page_token=token)
        seen.extend(page)
        pages += 1
        if not token:
            break
    assert seen == made and pages == 3
    with pytest.raises(InvalidArgument, match="page_size"):
        await ds.list_entries(page_size=10_001)
    with pytest.raises(InvalidArgument, match="page_token"):
        await ds.list_entries(page_size=3, page_token="abc")


async def test_events_follow_every_entry_write(ds: SqlDataStore, clock: ManualClock) -> None:
    a = await ds.create_entry(entry("/a", "t:1"))
    await ds.update_entry(dataclasses.replace(a, hint="x"), {"hint"})
    await ds.delete_entry(a.entry_id)
    events = await ds.list_entry_events(0, 100)
    assert [e for _, e in events] == [a.entry_id] * 3
    ids = [i for i, _ in events]
    assert ids == sorted(ids)
    assert await ds.list_entry_events(ids[0], 1) == [events[1]]
    assert (await ds.latest_event_ids())[0] == ids[-1]
    with pytest.raises(InvalidArgument, match="limit"):
        await ds.list_entry_events(0, 0)
