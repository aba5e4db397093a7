"""JWT-SVIDs: minting as SPIRE does, and every validation rule shown rejecting."""

from __future__ import annotations

import base64
import datetime as dt
import json
import string
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe_pki import KEY_MAKERS, NOW, WORKLOAD

from plastron.errors import InvalidSvid
from plastron.keymanager import PrivateKey
from plastron.spiffe.jwtsvid import (
    MAX_TOKEN_BYTES,
    JwtSvid,
    mint_jwt_svid,
    new_key_id,
    parse_jwt_svid_insecure,
    validate_jwt_svid,
)

KID = "kid-1"
_KEYS: dict[str, PrivateKey] = {}


def key_for(kind: str) -> PrivateKey:
    if kind not in _KEYS:
        _KEYS[kind] = KEY_MAKERS[kind]()
    return _KEYS[kind]


@pytest.fixture
def key() -> PrivateKey:
    return key_for("ec-p256")


def mint(key: PrivateKey, audience: tuple[str, ...] = ("svc-a",), **kw: Any) -> str:
    args: dict[str, Any] = {
        "spiffe_id": WORKLOAD,
        "audience": audience,
        "issued_at": NOW,
        "expires_at": NOW + dt.timedelta(minutes=5),
        "key": key,
        "key_id": KID,
    }
    args.update(kw)
    return mint_jwt_svid(**args)


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def forge(key: PrivateKey, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    """A token signed by ``key`` with arbitrary claims (to reach the claim checks)."""
    return jwt.encode(claims, key, algorithm="ES256", headers=headers or {"kid": KID})


def validate(token: str, key: PrivateKey, audience: str = "svc-a") -> JwtSvid:
    return validate_jwt_svid(token, audience=audience, authorities={KID: key.public_key()}, now=NOW)


@pytest.mark.parametrize(
    ("kind", "alg"), [("ec-p256", "ES256"), ("ec-p384", "ES384"), ("rsa-2048", "RS256")]
)
def test_mint_and_validate(kind: str, alg: str) -> None:
    key = key_for(kind)
    token = mint(key, issuer="https://oidc.example.org")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": KID, "typ": "JWT"}
    svid = validate(token, key)
    assert svid.spiffe_id == WORKLOAD
    assert svid.audience == ("svc-a",)
    assert svid.expires_at == NOW + dt.timedelta(minutes=5)
    assert svid.issued_at == NOW
    assert svid.claims["iss"] == "https://oidc.example.org"
    assert svid.claims["aud"] == "svc-a"  # one audience is a string, as SPIRE (go-jose) emits it
    assert token not in repr(svid)


def test_several_audiences_are_an_array(key: PrivateKey) -> None:
    token = mint(key, audience=("a", "b"))
    svid = validate(token, key, audience="b")
    assert svid.claims["aud"] == ["a", "b"]
    assert validate_jwt_svid(
        token, audience=["a", "b"], authorities={KID: key.public_key()}, now=NOW
    ).audience == ("a", "b")


class DelegatingKey(ec.EllipticCurvePrivateKey):
    """Stands for an HSM key: only public_key() and sign() work, the private half stays away."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner
        self.signed = 0

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        self.signed += 1
        return self._inner.sign(data, signature_algorithm)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError("the key never leaves the device")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise NotImplementedError("the key never leaves the device")

    def __copy__(self) -> DelegatingKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> DelegatingKey:
        return self


@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384"])
def test_custom_key_subclass_mints_valid_tokens(kind: str) -> None:
    inner = key_for(kind)
    assert isinstance(inner, ec.EllipticCurvePrivateKey)
    wrapped = DelegatingKey(inner)
    token = mint(wrapped)
    assert wrapped.signed == 1
    assert validate(token, inner).spiffe_id == WORKLOAD


# ---- rejections --------------------------------------------------------------------------------


def test_forged_signature_is_rejected(key: PrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidSvid, match="signature does not verify with key 'kid-1'"):
        validate(mint(other), key)


def test_tampered_payload_is_rejected(key: PrivateKey) -> None:
    head, _, sig = mint(key).split(".")
    payload = b64({"sub": "spiffe://example.org/admin", "aud": "svc-a", "exp": 2**40})
    with pytest.raises(InvalidSvid, match="signature does not verify"):
        validate(f"{head}.{payload}.{sig}", key)


def test_wrong_audience_is_rejected(key: PrivateKey) -> None:
    with pytest.raises(InvalidSvid, match="not for audience 'svc-b'"):
        validate(mint(key), key, audience="svc-b")


def test_every_expected_audience_must_be_present(key: PrivateKey) -> None:
    with pytest.raises(InvalidSvid, match="not for audience 'b'"):
        validate_jwt_svid(
            mint(key, audience=("a",)),
            audience=["a", "b"],
            authorities={KID: key.public_key()},
            now=NOW,
        )


def test_expired_is_rejected(key: PrivateKey) -> None:
    token = mint(key)
    with pytest.raises(InvalidSvid, match="expired at 2026-01-01T12:05:00"):
        validate_jwt_svid(
            token,
            audience="svc-a",
            authorities={KID: key.public_key()},
            now=NOW + dt.timedelta(minutes=5),
        )


def test_not_yet_valid_is_rejected(key: PrivateKey) -> None:
    claims = {
        "sub": str(WORKLOAD),
        "aud": "svc-a",
        "exp": int(NOW.timestamp()) + 60,
        "nbf": int(NOW.timestamp()) + 30,
    }
    with pytest.raises(InvalidSvid, match="not valid before"):
        validate(forge(key, claims), key)


def test_alg_none_is_rejected(key: PrivateKey) -> None:
    claims = {"sub": str(WORKLOAD), "aud": "svc-a", "exp": int(NOW.timestamp()) + 60}
    token = f"{b64({'alg': 'none', 'kid': KID})}.{b64(claims)}."
    with pytest.raises(InvalidSvid, match="alg 'none' is not allowed"):
        validate(token, key)


def test_hs256_is_rejected(key: PrivateKey) -> None:
    claims = {"sub": str(WORKLOAD), "aud": "svc-a", "exp": int(NOW.timestamp()) + 60}
    token = jwt.encode(
        claims, "a-shared-secret-that-is-long-enough!", algorithm="HS256", headers={"kid": KID}
    )
    with pytest.raises(InvalidSvid, match="alg 'HS256' is not allowed; HMAC"):
        validate(token, key)


def test_unlisted_alg_is_rejected(key: PrivateKey) -> None:
    token = f"{b64({'alg': 'EdDSA', 'kid': KID})}.{b64({'sub': str(WORKLOAD)})}.AAAA"
    with pytest.raises(InvalidSvid, match="alg 'EdDSA' is not allowed; expected one of"):
        validate(token, key)


def test_alg_that_does_not_match_the_key_is_rejected(key: PrivateKey) -> None:
    token = mint(key_for("ec-p384"))
    with pytest.raises(InvalidSvid, match="alg ES384 does not match the type of key 'kid-1'"):
        validate(token, key)


def test_unknown_kid_is_rejected(key: PrivateKey) -> None:
    with pytest.raises(InvalidSvid, match="key id 'other' is not a JWT authority"):
        validate(mint(key, key_id="other"), key)


def test_missing_kid_is_rejected(key: PrivateKey) -> None:
    claims = {"sub": str(WORKLOAD), "aud": "svc-a", "exp": int(NOW.timestamp()) + 60}
    with pytest.raises(InvalidSvid, match="no 'kid'"):
        validate(forge(key, claims, headers={"typ": "JWT"}), key)


def test_wrong_typ_is_rejected(key: PrivateKey) -> None:
    claims = {"sub": str(WORKLOAD), "aud": "svc-a", "exp": int(NOW.timestamp()) + 60}
    with pytest.raises(InvalidSvid, match="typ 'at\\+jwt' must be 'JWT' or 'JOSE'"):
        validate(forge(key, claims, headers={"kid": KID, "typ": "at+jwt"}), key)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "svc-a", "exp": 1767272400}, "no 'sub' claim"),
        (
            {"sub": "spiffe://Example.org/w", "aud": "svc-a", "exp": 1767272400},
            "not a valid SPIFFE ID",
        ),
        ({"sub": str(WORKLOAD), "exp": 1767272400}, "no 'aud' claim"),
        ({"sub": str(WORKLOAD), "aud": [], "exp": 1767272400}, "audience is empty"),
        ({"sub": str(WORKLOAD), "aud": [1], "exp": 1767272400}, "must be a non-empty string"),
        ({"sub": str(WORKLOAD), "aud": "svc-a"}, "no 'exp' claim"),
        ({"sub": str(WORKLOAD), "aud": "svc-a", "exp": "tomorrow"}, "'exp' claim must be a number"),
        ({"sub": str(WORKLOAD), "aud": "svc-a", "exp": True}, "'exp' claim must be a number"),
        ({"sub": str(WORKLOAD), "aud": "svc-a", "exp": 10**30}, "out of range"),
    ],
    ids=[
        "missing-sub",
        "bad-sub",
        "missing-aud",
        "empty-aud",
        "non-string-aud",
        "missing-exp",
        "string-exp",
        "bool-exp",
        "huge-exp",
    ],
)
def test_bad_claims_are_rejected(key: PrivateKey, claims: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSvid, match=message):
        validate(forge(key, claims), key)


def test_oversize_token_is_rejected(key: PrivateKey) -> None:
    claims = {"sub": str(WORKLOAD), "aud": "svc-a", "exp": 1767272400, "pad": "x" * MAX_TOKEN_BYTES}
    with pytest.raises(InvalidSvid, match="bytes; limit 65536"):
        validate(forge(key, claims), key)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "3 dot-separated parts, found 1"),
        ("a.b", "3 dot-separated parts, found 2"),
        ("a.b.c.d.e", "3 dot-separated parts, found 5"),
        ("!!!.e30.", "header is not base64url"),
        (f"{b64([1])}.e30.", "header is not a JSON object"),
        ("e30.e30.", "header has no 'alg'"),
    ],
)
def test_malformed_tokens_are_rejected(key: PrivateKey, token: str, message: str) -> None:
    with pytest.raises(InvalidSvid, match=message):
        validate(token, key)


def test_json_serialization_is_not_accepted(key: PrivateKey) -> None:
    head, payload, sig = mint(key).split(".")
    token = json.dumps({"protected": head, "payload": payload, "signature": sig})
    with pytest.raises(InvalidSvid, match="compact JWS"):
        validate(token, key)


def test_rejection_messages_never_carry_the_token(key: PrivateKey) -> None:
    token = mint(key)
    with pytest.raises(InvalidSvid) as info:
        validate(token, key, audience="svc-b")
    assert token not in str(info.value)
    assert token.split(".")[2] not in str(info.value)


# ---- insecure parse, key ids, mint arguments ----------------------------------------------------


def test_parse_insecure_reads_claims_without_a_key(key: PrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    svid = parse_jwt_svid_insecure(mint(other))
    assert svid.spiffe_id == WORKLOAD and svid.expires_at == NOW + dt.timedelta(minutes=5)
    with pytest.raises(InvalidSvid, match="alg 'none'"):
        parse_jwt_svid_insecure(f"{b64({'alg': 'none'})}.{b64({})}.")


def test_new_key_id_shape() -> None:
    ids = {new_key_id() for _ in range(20)}
    assert len(ids) == 20
    alphabet = set(string.ascii_letters + string.digits)
    assert all(len(k) == 32 and set(k) <= alphabet for k in ids)


def test_mint_refuses_bad_arguments(key: PrivateKey) -> None:
    with pytest.raises(InvalidSvid, match="audience is empty"):
        mint(key, audience=())
    with pytest.raises(InvalidSvid, match="is not after issued_at"):
        mint(key, expires_at=NOW)
    with pytest.raises(InvalidSvid, match="key id must be"):
        mint(key, key_id="")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidSvid, match="1024 bits is too small"):
        mint(small)
