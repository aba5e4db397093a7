"""Interop: what we build is accepted by the `spiffe` PyPI library (py-spiffe)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe_pki import NOW, TD, WORKLOAD, Pki

from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.jwtsvid import mint_jwt_svid, validate_jwt_svid
from plastron.spiffe.x509svid import X509Svid

py_spiffe = pytest.importorskip("spiffe")
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle  # noqa: E402
from spiffe.bundle.x509_bundle.x509_bundle import X509Bundle  # noqa: E402
from spiffe.spiffe_id.spiffe_id import TrustDomain as PyTrustDomain  # noqa: E402
from spiffe.svid.jwt_svid import JwtSvid as PyJwtSvid  # noqa: E402
from spiffe.svid.x509_svid import X509Svid as PyX509Svid  # noqa: E402


def test_py_spiffe_parses_our_x509_svid_and_bundle(pki: Pki) -> None:
    svid = X509Svid(WORKLOAD, (pki.leaf, pki.inter), pki.leaf_key)
    theirs = PyX509Svid.parse_raw(svid.chain_der(), svid.key_pkcs8_der())
    assert str(theirs.spiffe_id) == str(WORKLOAD)
    assert len(theirs.cert_chain) == 2
    bundle = Bundle(TD, x509_authorities=(X509Authority(pki.root),))
    their_bundle = X509Bundle.parse_raw(PyTrustDomain(TD.name), bundle.x509_der())
    assert len(their_bundle.x509_authorities) == 1
    from_pem = X509Bundle.parse(PyTrustDomain(TD.name), bundle.to_pem())
    assert len(from_pem.x509_authorities) == 1


def test_py_spiffe_validates_our_jwt_svid_with_our_jwks() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # py-spiffe checks expiry against the wall clock, so this token lives far into the future.
    token = mint_jwt_svid(
        spiffe_id=WORKLOAD,
        audience=["svc-a"],
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(days=365 * 70),
        key=key,
        key_id="kid-1",
    )
    bundle = Bundle(TD, jwt_authorities=(JwtAuthority("kid-1", key.public_key()),))
    their_bundle = JwtBundle.parse(PyTrustDomain(TD.name), bundle.to_jwks())
    theirs = PyJwtSvid.parse_and_validate(token, their_bundle, {"svc-a"})
    assert str(theirs.spiffe_id) == str(WORKLOAD)
    ours = validate_jwt_svid(token, audience="svc-a", authorities=bundle.jwt_keys(), now=NOW)
    assert ours.spiffe_id == WORKLOAD
