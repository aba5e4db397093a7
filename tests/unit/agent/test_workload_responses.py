"""Stream responses are encoded once per distinct state and shared: callers in the same state
get the same bytes from one build; any new SVID, entry change or bundle is a new build, never
another state's bytes."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from agent_authority import TestAuthority, entry

from plastron.agent.cache import WorkloadCache, WorkloadUpdate
from plastron.agent.workloadapi import messages
from plastron.agent.workloadapi.encoded import ResponseMemo
from plastron.clock import ManualClock
from plastron.proto.workload import workload_pb2 as pb
from plastron.selector import Selector

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
UID = Selector.parse("unix:uid:1000")
OTHER = Selector.parse("unix:uid:2000")


@pytest.fixture
def ca() -> TestAuthority:
    return TestAuthority("example.org", NOW)


@pytest.fixture
def cache(ca: TestAuthority) -> WorkloadCache:
    c = WorkloadCache(ca.td, ManualClock(NOW))
    c.set_bundle(ca.bundle)
    c.set_entries(
        [entry("a", ca.td, "/a", "unix:uid:1000"), entry("b", ca.td, "/b", "unix:uid:2000")]
    )
    c.set_x509_svids({"a": ca.svid("/a"), "b": ca.svid("/b")})
    return c


def _svids(data: bytes | None) -> list[tuple[str, bytes]]:
    assert data is not None
    msg = pb.X509SVIDResponse.FromString(data)
    return [(s.spiffe_id, s.x509_svid_key) for s in msg.svids]


def encode(memo: ResponseMemo, update: WorkloadUpdate) -> bytes | None:
    return memo.encoded("FetchX509SVID", update, messages.x509_svid_response)


def test_callers_in_the_same_state_share_one_build(cache: WorkloadCache) -> None:
    memo = ResponseMemo()
    first = encode(memo, cache.update_for({UID}))
    second = encode(memo, cache.update_for({UID}))
    assert first == second and memo.builds == 1
    expected = messages.x509_svid_response(cache.update_for({UID}))
    assert first == expected.SerializeToString(deterministic=True)


def test_another_identity_set_is_its_own_response(cache: WorkloadCache) -> None:
    memo = ResponseMemo()
    mine = _svids(encode(memo, cache.update_for({UID})))
    theirs = _svids(encode(memo, cache.update_for({OTHER})))
    assert [s for s, _ in mine] == ["spiffe://example.org/a"]
    assert [s for s, _ in theirs] == ["spiffe://example.org/b"]


def test_a_rotated_svid_is_a_new_build_with_the_new_key(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    memo = ResponseMemo()
    before = _svids(encode(memo, cache.update_for({UID})))
    cache.set_x509_svids({"a": ca.svid("/a")})
    after = _svids(encode(memo, cache.update_for({UID})))
    assert memo.builds == 2 and before[0][1] != after[0][1]
    assert after[0][1] == cache.update_for({UID}).identities[0].svid.key_pkcs8_der()


def test_a_changed_entry_or_bundle_is_a_new_build(cache: WorkloadCache, ca: TestAuthority) -> None:
    memo = ResponseMemo()
    encode(memo, cache.update_for({UID}))
    hinted = replace(cache.entries()[0], hint="db")
    cache.set_entries([hinted, *cache.entries()[1:]])
    data = encode(memo, cache.update_for({UID}))
    assert memo.builds == 2
    assert data is not None and pb.X509SVIDResponse.FromString(data).svids[0].hint == "db"
    cache.set_bundle(TestAuthority("example.org", NOW).bundle)
    data = encode(memo, cache.update_for({UID}))
    assert memo.builds == 3
    assert data is not None
    assert pb.X509SVIDResponse.FromString(data).svids[0].bundle == cache.bundle.x509_der()  # type: ignore[union-attr]


def test_nothing_to_send_is_not_kept_and_the_memo_is_bounded(cache: WorkloadCache) -> None:
    memo = ResponseMemo(states=1)
    assert memo.encoded("FetchX509SVID", cache.update_for({UID}), lambda u: None) is None
    assert len(memo) == 0
    encode(memo, cache.update_for({UID}))
    encode(memo, cache.update_for({OTHER}))
    assert len(memo) == 1


def test_a_memory_address_reused_by_a_later_svid_never_matches_an_old_state(
    cache: WorkloadCache, ca: TestAuthority
) -> None:
    # An SVID freed after a rotation leaves its address (its id) to a later one; the memo
    # keeps each state's objects alive, so a key can only ever name the objects it was made of.
    memo = ResponseMemo()
    for _ in range(30):
        cache.set_x509_svids({"a": ca.svid("/a")})
        current = cache.update_for({UID}).identities[0].svid.key_pkcs8_der()
        assert _svids(encode(memo, cache.update_for({UID}))) == [
            ("spiffe://example.org/a", current)
        ]
