from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest
from agent_authority import TestAuthority, entry

from plastron.agent.cache import WorkloadCache
from plastron.clock import ManualClock
from plastron.selector import Selector
from plastron.spiffe.bundle import X509Authority

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
UID = Selector.parse("unix:uid:1000")
GID = Selector.parse("unix:gid:1000")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def ca() -> TestAuthority:
    return TestAuthority("example.org", NOW)


@pytest.fixture
def cache(clock: ManualClock, ca: TestAuthority) -> WorkloadCache:
    c = WorkloadCache(ca.td, clock)
    c.set_bundle(ca.bundle)
    return c


def test_entry_matches_only_when_all_its_selectors_are_present(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    cache.set_entries(
        [
            entry("a", ca.td, "/a", "unix:uid:1000"),
            entry("b", ca.td, "/b", "unix:uid:1000", "unix:gid:1000"),
            entry("c", ca.td, "/c", "unix:uid:2000"),
        ]
    )
    assert [e.entry_id for e in cache.matching_entries({UID})] == ["a"]
    assert [e.entry_id for e in cache.matching_entries({UID, GID})] == ["a", "b"]
    assert cache.matching_entries({Selector.parse("unix:uid:3000")}) == []
    assert cache.matching_entries(set()) == []


def test_update_holds_only_entries_with_valid_svids(
    cache: WorkloadCache, ca: TestAuthority, clock: ManualClock
) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    assert cache.update_for({UID}).identities == ()
    assert cache.svid_wanted.is_set()
    svid = ca.svid("/a", ttl=dt.timedelta(minutes=10))
    cache.set_x509_svids({"a": svid})
    update = cache.update_for({UID})
    assert [i.svid for i in update.identities] == [svid]
    assert update.bundle == ca.bundle
    clock.advance(dt.timedelta(minutes=11))
    assert cache.update_for({UID}).identities == ()


def test_svid_for_another_spiffe_id_or_unknown_entry_is_not_stored(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    cache.set_x509_svids({"a": ca.svid("/other"), "zz": ca.svid("/a")})
    assert cache.x509_svid_count == 0


def test_removed_or_renamed_entry_loses_its_svid(cache: WorkloadCache, ca: TestAuthority) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000"), entry("b", ca.td, "/b", "x:y")])
    cache.set_x509_svids({"a": ca.svid("/a"), "b": ca.svid("/b")})
    cache.set_entries([entry("a", ca.td, "/renamed", "unix:uid:1000")])
    assert cache.x509_svid("a") is None
    assert cache.x509_svid("b") is None
    assert [e.entry_id for e in cache.entries_needing_svid()] == ["a"]


def test_selector_change_keeps_svid(cache: WorkloadCache, ca: TestAuthority) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    svid = ca.svid("/a")
    cache.set_x509_svids({"a": svid})
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:2000")])
    assert cache.x509_svid("a") is svid
    assert cache.update_for({UID}).identities == ()


def test_svid_needs_renewal_at_half_life(
    cache: WorkloadCache, ca: TestAuthority, clock: ManualClock
) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    cache.set_x509_svids({"a": ca.svid("/a", ttl=dt.timedelta(hours=1))})
    assert cache.entries_needing_svid() == []
    clock.advance(dt.timedelta(minutes=29))
    assert cache.entries_needing_svid() == []
    clock.advance(dt.timedelta(minutes=2))
    assert [e.entry_id for e in cache.entries_needing_svid()] == ["a"]


def test_lru_bound_evicts_unsubscribed_svids_first(clock: ManualClock, ca: TestAuthority) -> None:
    cache = WorkloadCache(ca.td, clock, max_x509_svids=2)
    cache.set_entries([entry(n, ca.td, f"/{n}", f"app:{n}") for n in "abc"])
    with cache.subscribe({Selector.parse("app:a")}):
        cache.set_x509_svids({"a": ca.svid("/a")})
        cache.set_x509_svids({"b": ca.svid("/b")})
        cache.set_x509_svids({"c": ca.svid("/c")})
        assert cache.x509_svid_count == 2
        assert cache.x509_svid("a") is not None  # subscribed: never evicted
        assert cache.x509_svid("b") is None  # least recently used
        # Full: only subscribed entries would be minted now.
        assert cache.entries_needing_svid() == []


def test_needing_svid_past_bound_prefers_subscribed_entries(
    clock: ManualClock, ca: TestAuthority
) -> None:
    cache = WorkloadCache(ca.td, clock, max_x509_svids=1)
    cache.set_entries([entry(n, ca.td, f"/{n}", f"app:{n}") for n in "abc"])
    with cache.subscribe({Selector.parse("app:c")}):
        assert [e.entry_id for e in cache.entries_needing_svid()] == ["c"]


async def test_subscriber_gets_state_at_once_and_on_each_change(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    cache.set_x509_svids({"a": ca.svid("/a")})
    with cache.subscribe({UID}) as sub:
        first = await asyncio.wait_for(sub.next(), 1)
        assert len(first.identities) == 1
        # A change that does not concern this subscriber is not re-sent.
        cache.set_entries([*cache.entries(), entry("x", ca.td, "/x", "unix:uid:9")])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.next(), 0.05)
        rotated = ca.svid("/a")
        cache.set_x509_svids({"a": rotated})
        second = await asyncio.wait_for(sub.next(), 1)
        assert second.identities[0].svid is rotated
        new_bundle = ca.bundle.with_x509_authority(ca.svid("/unrelated").leaf)
        cache.set_bundle(new_bundle)
        third = await asyncio.wait_for(sub.next(), 1)
        assert third.bundle == new_bundle
    assert cache.subscriber_count == 0


async def test_federated_bundle_reaches_only_entries_that_federate(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    other = TestAuthority("other.org", NOW)
    cache.set_entries(
        [
            entry("a", ca.td, "/a", "unix:uid:1000", federates_with=(other.td,)),
            entry("b", ca.td, "/b", "unix:uid:2000"),
        ]
    )
    cache.set_x509_svids({"a": ca.svid("/a"), "b": ca.svid("/b")})
    cache.set_federated_bundles({other.td: other.bundle, ca.td: ca.bundle})
    assert cache.federated_bundles == {other.td: other.bundle}
    assert cache.update_for({UID}).federated_bundles == {other.td: other.bundle}
    assert cache.update_for({Selector.parse("unix:uid:2000")}).federated_bundles == {}


def test_bundle_for_another_trust_domain_is_refused(cache: WorkloadCache) -> None:
    other = TestAuthority("other.org", NOW)
    with pytest.raises(ValueError, match=r"other\.org"):
        cache.set_bundle(other.bundle)


def test_jwt_cached_until_half_life_per_audience_set(
    cache: WorkloadCache, ca: TestAuthority, clock: ManualClock
) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    token = ca.jwt(ca.td.spiffe_id("/a"), ("x", "y"), ttl=dt.timedelta(minutes=10))
    cache.set_jwt_svid("a", ["y", "x"], token)
    assert cache.jwt_svid("a", ["x", "y"]) is token
    assert cache.jwt_svid("a", ["x"]) is None
    clock.advance(dt.timedelta(minutes=5))
    assert cache.jwt_svid("a", ["x", "y"]) is None


def test_jwt_cache_is_bounded(clock: ManualClock, ca: TestAuthority) -> None:
    cache = WorkloadCache(ca.td, clock, max_jwt_svids=2)
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    sid = ca.td.spiffe_id("/a")
    for aud in ("1", "2", "3"):
        cache.set_jwt_svid("a", [aud], ca.jwt(sid, (aud,)))
    assert cache.jwt_svid("a", ["1"]) is None
    assert cache.jwt_svid("a", ["3"]) is not None


def test_svid_chained_to_a_tainted_authority_is_due_at_once(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    """Both authorities in the bundle, as after a rotation; only the tainted one's SVID."""
    successor = TestAuthority("example.org", NOW)
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000"), entry("b", ca.td, "/b", "x:y")])
    cache.set_x509_svids({"a": ca.svid("/a"), "b": successor.svid("/b")})
    both = replace(ca.bundle, x509_authorities=(X509Authority(ca.ca), X509Authority(successor.ca)))
    cache.set_bundle(both)
    assert cache.entries_needing_svid() == []
    cache.set_bundle(both.taint_x509_authority(X509Authority(ca.ca).authority_id))
    assert [e.entry_id for e in cache.entries_needing_svid()] == ["a"]


def test_jwt_svids_of_a_tainted_key_are_forgotten(cache: WorkloadCache, ca: TestAuthority) -> None:
    cache.set_entries([entry("a", ca.td, "/a", "unix:uid:1000")])
    sid = ca.td.spiffe_id("/a")
    cache.set_jwt_svid("a", ("aud",), ca.jwt(sid, ("aud",)))
    assert cache.jwt_svid("a", ("aud",)) is not None
    cache.set_bundle(ca.bundle.taint_jwt_authority(ca.jwt_kid))
    assert cache.jwt_svid("a", ("aud",)) is None
