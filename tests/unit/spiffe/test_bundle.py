"""SPIFFE bundles: JWKS round trips, the spec's skip-vs-reject rules, storage, changes."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spiffe_pki import KEY_MAKERS, NOW, TD, Pki, make_pki, make_root

from plastron.errors import FailedPrecondition, InvalidBundle
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority, x509_authority_id
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwk import public_key_to_jwk
from plastron.spiffe.x509svid import parse_der_chain

DER = serialization.Encoding.DER
_PKIS = {kind: make_pki(kind) for kind in KEY_MAKERS}
JWT_KEYS = {kind: make().public_key() for kind, make in KEY_MAKERS.items()}


def full_bundle() -> Bundle:
    return Bundle(
        trust_domain=TD,
        x509_authorities=tuple(X509Authority(p.root) for p in _PKIS.values()),
        jwt_authorities=tuple(
            JwtAuthority(f"kid-{kind}", key, expires_at=NOW + dt.timedelta(days=1))
            for kind, key in JWT_KEYS.items()
        ),
        refresh_hint=300,
        sequence_number=7,
    )


def test_jwks_round_trip() -> None:
    bundle = full_bundle()
    doc = json.loads(bundle.to_jwks())
    assert doc["spiffe_sequence"] == 7 and doc["spiffe_refresh_hint"] == 300
    uses = [k["use"] for k in doc["keys"]]
    assert uses == ["x509-svid"] * 3 + ["jwt-svid"] * 3
    for k in doc["keys"][:3]:
        assert "kid" not in k and len(k["x5c"]) == 1
    assert [k["kid"] for k in doc["keys"][3:]] == ["kid-ec-p256", "kid-ec-p384", "kid-rsa-2048"]
    back = Bundle.from_jwks(TD, bundle.to_jwks())
    assert back.x509_certificates() == bundle.x509_certificates()
    assert back.jwt_keys() == bundle.jwt_keys()
    assert (back.refresh_hint, back.sequence_number) == (300, 7)


def test_spec_example_shape_parses() -> None:
    """The spec's Appendix A shape: kty/n/e (or crv/x/y) beside use and x5c."""
    root = _PKIS["rsa-2048"].root
    jwk: dict[str, Any] = public_key_to_jwk(root.public_key())  # type: ignore[arg-type]
    jwk.update(use="x509-svid", x5c=[base64.b64encode(root.public_bytes(DER)).decode()])
    doc = {"spiffe_sequence": 1, "spiffe_refresh_hint": 2419200, "keys": [jwk]}
    bundle = Bundle.from_jwks(TD, json.dumps(doc).encode())
    assert bundle.x509_certificates() == [root]


def test_workload_api_views() -> None:
    bundle = full_bundle()
    assert parse_der_chain(bundle.x509_der()) == bundle.x509_certificates()
    assert bundle.to_pem().count(b"BEGIN CERTIFICATE") == 3


def _doc(*keys: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"keys": list(keys), **top}).encode()


def _x509_jwk(pki: Pki | None = None) -> dict[str, Any]:
    root = (pki or _PKIS["ec-p256"]).root
    jwk: dict[str, Any] = public_key_to_jwk(root.public_key())  # type: ignore[arg-type]
    jwk.update(use="x509-svid", x5c=[base64.b64encode(root.public_bytes(DER)).decode()])
    return jwk


def _jwt_jwk(kid: str | None = "k1") -> dict[str, Any]:
    jwk = public_key_to_jwk(JWT_KEYS["ec-p256"])
    jwk["use"] = "jwt-svid"
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def test_unknown_use_and_kty_entries_are_ignored_per_spec() -> None:
    unknown_use = {**_jwt_jwk(), "use": "wit-svid"}
    no_use = {k: v for k, v in _jwt_jwk("k2").items() if k != "use"}
    unknown_kty = {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "jwt-svid", "kid": "k3"}
    bundle = Bundle.from_jwks(TD, _doc(unknown_use, no_use, unknown_kty, _x509_jwk()))
    assert bundle.jwt_keys() == {}
    assert len(bundle.x509_authorities) == 1
    assert bundle.sequence_number == 0 and bundle.refresh_hint is None


def _with(jwk: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**jwk, **changes}


REJECTED: dict[str, tuple[bytes, str]] = {
    "not-json": (b"{", "not UTF-8 JSON"),
    "not-utf8": (b"\xff\xfe", "not UTF-8 JSON"),
    "not-object": (b"[]", "not a JSON object"),
    "no-keys": (b"{}", "no 'keys' array"),
    "keys-not-array": (b'{"keys": {}}', "no 'keys' array"),
    "entry-not-object": (_doc("x"), "entry 0 is not a JSON object"),  # type: ignore[arg-type]
    "jwt-without-kid": (_doc(_jwt_jwk(None)), "no 'kid'"),
    "jwt-empty-kid": (_doc(_jwt_jwk("")), "no 'kid'"),
    "duplicate-kid": (_doc(_jwt_jwk("k"), _jwt_jwk("k")), "repeats JWT key id 'k'"),
    "x5c-two-certs": (
        _doc(_with(_x509_jwk(), x5c=_x509_jwk()["x5c"] * 2)),
        "exactly one x5c cert, found 2",
    ),
    "x5c-missing": (_doc({k: v for k, v in _x509_jwk().items() if k != "x5c"}), "found 0"),
    "x5c-not-base64": (_doc(_with(_x509_jwk(), x5c=["%%%"])), "not a DER certificate"),
    "x5c-not-a-cert": (_doc(_with(_x509_jwk(), x5c=["MAA="])), "not a DER certificate"),
    "x5c-key-mismatch": (
        _doc(_with(_x509_jwk(), x=_jwt_jwk()["x"], y=_jwt_jwk()["y"])),
        "do not match its certificate",
    ),
    "missing-kty": (_doc({k: v for k, v in _jwt_jwk().items() if k != "kty"}), "no 'kty'"),
    "ec-off-curve": (_doc(_with(_jwt_jwk(), y=_jwt_jwk()["x"])), "not on curve"),
    "ec-short-coordinate": (_doc(_with(_jwt_jwk(), x="AAAA")), "must be 32 bytes"),
    "ec-unknown-curve": (_doc(_with(_jwt_jwk(), crv="P-192")), "is not P-256"),
    "ec-padded-base64": (_doc(_with(_jwt_jwk(), x=_jwt_jwk()["x"] + "=")), "without padding"),
    "rsa-small": (
        _doc({"kty": "RSA", "n": "AQAB" * 30, "e": "AQAB", "use": "jwt-svid", "kid": "r"}),
        "allowed 2048",
    ),
    "sequence-negative": (_doc(spiffe_sequence=-1), "spiffe_sequence must be"),
    "sequence-string": (_doc(spiffe_sequence="1"), "spiffe_sequence must be"),
    "refresh-hint-bool": (_doc(spiffe_refresh_hint=True), "spiffe_refresh_hint must be"),
    "too-many-keys": (_doc(*([{"use": "other"}] * 1025)), "limit 1024"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_malformed_bundles_are_rejected(name: str) -> None:
    data, message = REJECTED[name]
    with pytest.raises(InvalidBundle, match=message):
        Bundle.from_jwks(TD, data)


def test_oversize_bundle_is_rejected() -> None:
    with pytest.raises(InvalidBundle, match="bytes; limit 100"):
        Bundle.from_jwks(TD, b" " * 101, max_bytes=100)


def test_deeply_nested_json_is_rejected() -> None:
    with pytest.raises(InvalidBundle):
        Bundle.from_jwks(TD, b"[" * 100_000 + b"]" * 100_000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["x509-svid", "jwt-svid", "sig", ""]) | json_values,
        "kty": st.sampled_from(["EC", "RSA", "OKP"]) | json_values,
        "crv": st.sampled_from(["P-256", "P-384"]) | json_values,
        "x": st.text(max_size=60) | json_values,
        "y": st.text(max_size=60) | json_values,
        "n": st.text(max_size=400),
        "e": st.sampled_from(["AQAB", "Aw", "AA", ""]),
        "kid": json_values,
        "x5c": st.lists(st.text(max_size=40) | json_values, max_size=2),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_from_jwks_on_arbitrary_bytes_raises_only_invalid_bundle(data: bytes) -> None:
    with contextlib.suppress(InvalidBundle):
        Bundle.from_jwks(TD, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(jwk_like | json_values, max_size=4), json_values, json_values)
def test_from_jwks_on_arbitrary_documents_raises_only_invalid_bundle(
    keys: list[Any], seq: Any, hint: Any
) -> None:
    data = json.dumps({"keys": keys, "spiffe_sequence": seq, "spiffe_refresh_hint": hint})
    with contextlib.suppress(InvalidBundle):
        Bundle.from_jwks(TD, data.encode())


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.sampled_from(sorted(_PKIS)), unique=True),
    st.dictionaries(
        st.text(min_size=1, max_size=40), st.sampled_from(sorted(JWT_KEYS)), max_size=5
    ),
    st.none() | st.integers(0, 2**63),
    st.integers(0, 2**64 - 1),
)
def test_jwks_round_trip_property(
    x509_kinds: list[str], jwt_kinds: dict[str, str], hint: int | None, seq: int
) -> None:
    bundle = Bundle(
        trust_domain=TD,
        x509_authorities=tuple(X509Authority(_PKIS[k].root) for k in x509_kinds),
        jwt_authorities=tuple(JwtAuthority(kid, JWT_KEYS[k]) for kid, k in jwt_kinds.items()),
        refresh_hint=hint,
        sequence_number=seq,
    )
    assert Bundle.from_jwks(TD, bundle.to_jwks()) == bundle
    assert Bundle.from_json(bundle.to_json()) == bundle


# ---- storage format ---------------------------------------------------------------------------


def test_storage_round_trip_keeps_taint_and_expiry() -> None:
    bundle = full_bundle().taint_jwt_authority("kid-ec-p384")
    bundle = bundle.taint_x509_authority(x509_authority_id(_PKIS["ec-p256"].root))
    back = Bundle.from_json(bundle.to_json())
    assert back == bundle
    assert [a.tainted for a in back.jwt_authorities] == [False, True, False]
    assert [a.tainted for a in back.x509_authorities] == [True, False, False]
    assert back.jwt_authorities[0].expires_at == NOW + dt.timedelta(days=1)


@pytest.mark.parametrize(
    "data",
    [b"{}", b'{"version": 2}', b"[]", b'{"version": 1, "trust_domain": 5}', b"\xff"],
)
def test_storage_format_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidBundle):
        Bundle.from_json(data)


# ---- changes ----------------------------------------------------------------------------------


def test_with_x509_authority_dedupes_and_bumps() -> None:
    empty = Bundle(TD)
    one = empty.with_x509_authority(_PKIS["ec-p256"].root)
    assert one.sequence_number == 1 and len(one.x509_authorities) == 1
    assert one.with_x509_authority(_PKIS["ec-p256"].root) is one
    two = one.with_x509_authority(_PKIS["ec-p384"].root)
    assert two.sequence_number == 2 and two.x509_certificates()[1] == _PKIS["ec-p384"].root


def test_with_jwt_authority_dedupes_and_refuses_kid_reuse() -> None:
    a = JwtAuthority("k", JWT_KEYS["ec-p256"])
    one = Bundle(TD).with_jwt_authority(a)
    assert one.with_jwt_authority(a) is one
    tainted = one.with_jwt_authority(JwtAuthority("k", JWT_KEYS["ec-p256"], tainted=True))
    assert tainted.jwt_authorities[0].tainted and tainted.sequence_number == 2
    with pytest.raises(InvalidBundle, match=r"already in the bundle .* with a different key"):
        one.with_jwt_authority(JwtAuthority("k", JWT_KEYS["ec-p384"]))


def test_removals() -> None:
    bundle = full_bundle()
    root_id = x509_authority_id(_PKIS["rsa-2048"].root)
    smaller = bundle.without_x509_authority(root_id).without_jwt_authority("kid-ec-p256")
    assert len(smaller.x509_authorities) == 2 and "kid-ec-p256" not in smaller.jwt_keys()
    assert smaller.sequence_number == bundle.sequence_number + 2
    with pytest.raises(InvalidBundle, match=r"no X.509 authority"):
        smaller.without_x509_authority(root_id)
    with pytest.raises(InvalidBundle, match="no JWT authority"):
        smaller.taint_jwt_authority("kid-ec-p256")


def test_prune_drops_expired_authorities() -> None:
    old_key = ec.generate_private_key(ec.SECP256R1())

    live = _PKIS["ec-p256"].root
    bundle = Bundle(
        TD,
        x509_authorities=(X509Authority(live),),
        jwt_authorities=(
            JwtAuthority("old", old_key.public_key(), expires_at=NOW - dt.timedelta(seconds=1)),
            JwtAuthority("live", JWT_KEYS["ec-p256"], expires_at=NOW + dt.timedelta(hours=1)),
            JwtAuthority("forever", JWT_KEYS["ec-p384"]),
        ),
    )
    pruned = bundle.prune(NOW)
    assert list(pruned.jwt_keys()) == ["live", "forever"]
    assert pruned.sequence_number == 1
    assert pruned.prune(NOW) is pruned
    assert make_root(old_key).not_valid_after_utc > NOW
    with pytest.raises(FailedPrecondition, match=r"would remove every X.509 authority"):
        bundle.prune(live.not_valid_after_utc)


def test_bundle_invariants() -> None:
    with pytest.raises(InvalidBundle, match="repeats JWT key id"):
        Bundle(TD, jwt_authorities=(JwtAuthority("k", JWT_KEYS["ec-p256"]),) * 2)
    with pytest.raises(InvalidBundle, match="out of range"):
        Bundle(TD, sequence_number=-1)
    with pytest.raises(InvalidBundle, match="timezone-aware"):
        JwtAuthority("k", JWT_KEYS["ec-p256"], expires_at=dt.datetime(2026, 1, 1))
    with pytest.raises(InvalidBundle, match="must be EC or RSA"):
        JwtAuthority("k", "not a key")  # type: ignore[arg-type]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    assert Bundle(TrustDomain("x.test"), jwt_authorities=(JwtAuthority("r", rsa_key),)).jwt_keys()
