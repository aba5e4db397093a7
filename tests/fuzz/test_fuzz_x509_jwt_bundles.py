"""Bad input at the credential parsers: CSRs (as the server API receives them), JWT-SVIDs
(parse and verify), SPIFFE bundles (JWKS) and DER certificate chains (bundles and SVIDs on the
wire). Seeds are real, valid objects; the generated inputs are random bytes, those seeds with
random edits, and (for JSON) documents of the right shape with wrong values."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from plastron.server.ca.csr import csr_public_key, csr_uri_and_dns, parse_csr
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import mint_jwt_svid, parse_jwt_svid_insecure, validate_jwt_svid
from plastron.spiffe.x509svid import make_ca_certificate, parse_der_chain
from tests.fuzz.fuzzing import any_bytes_for, b64_text, check, fuzz_settings, json_values, mutated

TD = TrustDomain("example.org")
NOW = dt.datetime.now(dt.UTC)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROOT = make_ca_certificate(
    trust_domain=TD,
    public_key=EC_KEY.public_key(),
    issuer=None,
    issuer_key=EC_KEY,
    not_before=NOW - dt.timedelta(hours=1),
    not_after=NOW + dt.timedelta(days=1),
)
ROOT_DER = ROOT.public_bytes(serialization.Encoding.DER)


def _csr(key: Any, uris: list[str], dns: list[str]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    )
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


CSR_SEEDS = [
    _csr(EC_KEY, ["spiffe://example.org/workload"], ["web.example.org"]),
    _csr(RSA_KEY, ["spiffe://example.org/a", "spiffe://example.org/b"], []),
    _csr(EC_KEY, [], []),
]


def _edit(der: bytes, old: bytes, new: bytes, at: int = 1) -> bytes:
    """``der`` with the ``at``-th occurrence of ``old`` replaced (same length: no DER
    lengths change)."""
    assert len(old) == len(new)
    index = -1
    for _ in range(at):
        index = der.index(old, index + 1)
    return der[:index] + new + der[index + len(old) :]


_POINT = b"\x03B\x00\x04"  # the BIT STRING holding an uncompressed P-256 point
# Inputs that once escaped as ValueError, InvalidVersion or TypeError (INTERNAL at the API):
CSR_OFF_CURVE = _edit(CSR_SEEDS[0], _POINT + CSR_SEEDS[0].split(_POINT)[1][:4], _POINT + bytes(4))
CSR_VERSION_1 = _edit(CSR_SEEDS[0], b"\x02\x01\x00\x30", b"\x02\x01\x01\x30")
CERT_VERSION_4 = _edit(ROOT_DER, b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03")
CERT_BITSTRING_NAME = _edit(ROOT_DER, b"\x06\x03U\x04\x06\x13", b"\x06\x03U\x04\x06\x03", at=2)


def _mint_x509_csr(data: bytes) -> tuple[SpiffeId, list[str]]:
    """What MintX509SVID does with a CSR before any signing."""
    csr = parse_csr(data)
    csr_public_key(csr)
    return csr_uri_and_dns(csr)


@fuzz_settings(200)
@given(data=any_bytes_for(CSR_SEEDS))
@example(data=CSR_OFF_CURVE)
@example(data=CSR_VERSION_1)
def test_csrs(data: bytes) -> None:
    check("CSR", _mint_x509_csr, data)


# ---- JWT-SVIDs ------------------------------------------------------------------------------

JWT_KEYS = {"kid-ec": EC_KEY.public_key(), "kid-rsa": RSA_KEY.public_key()}
JWT_SEEDS = [
    mint_jwt_svid(
        spiffe_id=SpiffeId.parse("spiffe://example.org/w"),
        audience=auds,
        issued_at=NOW - dt.timedelta(minutes=1),
        expires_at=NOW + dt.timedelta(minutes=5),
        key=key,
        key_id=kid,
    )
    for key, kid, auds in ((EC_KEY, "kid-ec", ["a"]), (RSA_KEY, "kid-rsa", ["a", "b"]))
]


def _b64url(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES256", "RS256", "none", "HS256", "PS512"]) | json_values,
        "kid": st.sampled_from(["kid-ec", "kid-rsa", ""]) | json_values,
        "typ": st.sampled_from(["JWT", "JOSE", "jwt"]) | json_values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["spiffe://example.org/w", "spiffe://other/w", "x"]) | json_values,
        "aud": st.sampled_from(["a", ["a", "b"], []]) | json_values,
        "exp": st.integers(min_value=-(2**66), max_value=2**66) | json_values,
        "iat": st.integers(min_value=-(2**40), max_value=2**40) | json_values,
    },
)
forged_jwts = st.builds(
    lambda h, c, sig: f"{_b64url(h)}.{_b64url(c)}.{sig}",
    headers,
    claims,
    st.sampled_from(["", "AAAA"]) | b64_text,
)
jwt_texts = (
    forged_jwts
    | mutated([t.encode() for t in JWT_SEEDS]).map(lambda b: b.decode("latin-1"))
    | st.text(max_size=200)
)


@fuzz_settings(200)
@given(token=jwt_texts, audience=st.sampled_from(["a", "b", "zz"]))
def test_jwt_svid_validation(token: str, audience: str) -> None:
    check(
        "JWT-SVID verify",
        validate_jwt_svid,
        token,
        audience=audience,
        authorities=JWT_KEYS,
        now=NOW,
    )


@fuzz_settings(100)
@given(token=jwt_texts)
def test_jwt_svid_parse(token: str) -> None:
    check("JWT-SVID parse", parse_jwt_svid_insecure, token)


# ---- bundles --------------------------------------------------------------------------------

BUNDLE = Bundle(
    TD,
    x509_authorities=(X509Authority(ROOT),),
    jwt_authorities=(JwtAuthority("kid-rsa", RSA_KEY.public_key()),),
    refresh_hint=300,
    sequence_number=7,
)
JWKS_SEED = BUNDLE.to_jwks()
jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "kty": st.sampled_from(["EC", "RSA", "OKP", "oct"]) | json_values,
        "use": st.sampled_from(["x509-svid", "jwt-svid", "sig"]) | json_values,
        "crv": st.sampled_from(["P-256", "P-384", "X25519"]) | json_values,
        "x": b64_text | json_values,
        "y": b64_text | json_values,
        "n": b64_text | json_values,
        "e": st.sampled_from(["AQAB"]) | json_values,
        "kid": st.text(max_size=10) | json_values,
        "x5c": st.lists(
            st.sampled_from([base64.b64encode(ROOT_DER).decode()]) | b64_text, max_size=3
        )
        | json_values,
    },
)
jwks_docs = st.fixed_dictionaries(
    {"keys": st.lists(jwk_like, max_size=4) | json_values},
    optional={
        "spiffe_sequence": st.integers(min_value=-5, max_value=2**70) | json_values,
        "spiffe_refresh_hint": st.integers(min_value=-5, max_value=2**70) | json_values,
    },
).map(lambda d: json.dumps(d).encode())


def _jwks_with_x5c(der: bytes) -> bytes:
    doc = json.loads(JWKS_SEED)
    doc["keys"][0]["x5c"] = [base64.b64encode(der).decode()]
    return json.dumps(doc).encode()


@fuzz_settings(200)
@given(data=jwks_docs | any_bytes_for([JWKS_SEED]))
@example(data=_jwks_with_x5c(CERT_VERSION_4))
@example(data=_jwks_with_x5c(CERT_BITSTRING_NAME))
def test_jwks_bundles(data: bytes) -> None:
    bundle = check("bundle (JWKS)", Bundle.from_jwks, TD, data)
    if bundle is not None:
        assert Bundle.from_jwks(TD, bundle.to_jwks()) == bundle


@fuzz_settings(200)
@given(data=any_bytes_for([ROOT_DER, ROOT_DER + ROOT_DER]))
@example(data=CERT_VERSION_4)
@example(data=ROOT_DER + CERT_BITSTRING_NAME)
def test_der_chains(data: bytes) -> None:
    certs = check("bundle / chain (DER)", parse_der_chain, data)
    if certs is not None:
        assert b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs) == data
