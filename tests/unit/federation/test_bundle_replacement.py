"""Which fetched bundle may replace the held one, and how often a domain is polled."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from plastron.errors import FailedPrecondition
from plastron.server.federation.client import _replace_if_newer
from plastron.server.federation.manager import (
    ATTEMPTS_PER_HINT,
    MAX_REFRESH_HINT,
    MIN_REFRESH_HINT,
    next_refresh_seconds,
)
from plastron.spiffe.bundle import Bundle, X509Authority
from plastron.spiffe.ids import TrustDomain
from tests.pki import self_signed

TD = TrustDomain("beta.test")


def _ca(lifetime: dt.timedelta = dt.timedelta(days=1)) -> x509.Certificate:
    return self_signed("ca", lifetime=lifetime, backdate=dt.timedelta(0), serial=1, ca=True).cert


def _bundle(sequence: int, *certs: x509.Certificate, hint: int | None = None) -> Bundle:
    return Bundle(TD, tuple(X509Authority(c) for c in certs), (), hint, sequence)


def test_a_newer_bundle_replaces_the_held_one() -> None:
    old, new = _ca(), _ca()
    fetched = _bundle(8, old, new)
    stored = _replace_if_newer(fetched, "endpoint")(_bundle(7, old).to_json())
    assert Bundle.from_json(stored) == fetched


def test_an_older_sequence_never_rolls_trust_back() -> None:
    old, new = _ca(), _ca()
    held = _bundle(8, old, new).to_json()
    with pytest.raises(FailedPrecondition, match="served sequence 7 is older than the held"):
        _replace_if_newer(_bundle(7, old), "endpoint")(held)


def test_the_same_content_is_not_rewritten() -> None:
    ca = _ca()
    held = _bundle(3, ca).to_json()
    assert _replace_if_newer(_bundle(3, ca), "endpoint")(held) is held


def test_first_fetch_stores_the_bundle() -> None:
    fetched = _bundle(1, _ca())
    assert Bundle.from_json(_replace_if_newer(fetched, "endpoint")(None)) == fetched


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (1, MIN_REFRESH_HINT),  # a hostile 1 s hint cannot make us poll in a loop
        (300, 300),
        (10**9, MAX_REFRESH_HINT),  # nor a huge one stop us polling
    ],
)
def test_refresh_hint_is_bounded(hint: int, expected: float) -> None:
    assert next_refresh_seconds(_bundle(1, _ca(), hint=hint)) == expected / ATTEMPTS_PER_HINT


def test_without_a_hint_a_tenth_of_the_shortest_authority_lifetime() -> None:
    bundle = _bundle(1, _ca(dt.timedelta(hours=10)), _ca(dt.timedelta(days=2)))
    assert next_refresh_seconds(bundle) == 3600 / ATTEMPTS_PER_HINT
