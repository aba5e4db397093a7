"""merge_upstream: how a nested server's bundle follows its upstream's (pure function)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.server.ca.upstream_sync import merge_upstream
from plastron.spiffe.bundle import Bundle, JwtAuthority, x509_authority_id
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate

TD = TrustDomain("example.org")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def root() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return make_ca_certificate(
        trust_domain=TD,
        public_key=key.public_key(),
        issuer=None,
        issuer_key=key,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=1),
    )


def jwt(kid: str, tainted: bool = False) -> JwtAuthority:
    return JwtAuthority(kid, ec.generate_private_key(ec.SECP256R1()).public_key(), None, tainted)


def bundle(*roots: x509.Certificate, jwts: tuple[JwtAuthority, ...] = ()) -> Bundle:
    b = Bundle(trust_domain=TD)
    for r in roots:
        b = b.with_x509_authority(r)
    for j in jwts:
        b = b.with_jwt_authority(j)
    return b


def merged(ours: Bundle, upstream: Bundle, **keep: set[str]) -> Bundle:
    return Bundle.from_json(merge_upstream(ours.to_json(), TD, upstream, **keep))


def test_new_roots_other_servers_keys_and_taints_are_taken() -> None:
    a, b = root(), root()
    other = jwt("other-downstream")
    upstream = bundle(a, b, jwts=(other,)).taint_x509_authority(x509_authority_id(a))
    out = merged(bundle(a), upstream)
    assert {x.certificate: x.tainted for x in out.x509_authorities} == {a: True, b: False}
    assert set(out.jwt_keys()) == {"other-downstream"}


def test_revoked_upstream_is_removed_but_our_own_roots_and_keys_stay() -> None:
    a, b, c = root(), root(), root()
    mine, gone = jwt("mine"), jwt("revoked")
    ours = bundle(a, b, c, jwts=(mine, gone))
    out = merged(ours, bundle(a), keep_x509={x509_authority_id(b)}, keep_jwt={"mine"})
    assert out.x509_certificates() == [a, b]
    assert set(out.jwt_keys()) == {"mine"}


def test_a_local_taint_is_not_undone_by_an_untainted_upstream_copy() -> None:
    key = jwt("mine")
    ours = bundle(jwts=(key,)).taint_jwt_authority("mine")
    out = merged(ours, bundle(jwts=(key,)))
    assert [j.tainted for j in out.jwt_authorities] == [True]


def test_nothing_new_leaves_the_stored_bytes_and_sequence_unchanged() -> None:
    a = root()
    stored = bundle(a).to_json()
    assert merge_upstream(stored, TD, bundle(a)) is stored
