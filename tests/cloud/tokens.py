"""Test issuers of provider-signed JWTs: RSA keys the test generates, published as a JWKS, and
tokens signed with them (PyJWT for well-formed ones; hand-built for the hostile shapes)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

_KEYS: dict[int, rsa.RSAPrivateKey] = {}


def rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """A 2048-bit key per slot, generated once per test process."""
    if slot not in _KEYS:
        _KEYS[slot] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEYS[slot]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def self_signed(key: rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def jwk(
    kid: str, key: rsa.RSAPrivateKey, *, members: bool = True, x5c: bool = False
) -> dict[str, Any]:
    """The public JWK of ``key``: n/e members, an x5c certificate, or both."""
    out: dict[str, Any] = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256"}
    if members:
        nums = key.public_key().public_numbers()
        out |= {"n": _uint(nums.n), "e": _uint(nums.e)}
    if x5c:
        der = self_signed(key, kid).public_bytes(serialization.Encoding.DER)
        out["x5c"] = [base64.b64encode(der).decode("ascii")]
    return out


@dataclass
class Issuer:
    """A provider's signing keys (kid -> key) and how it publishes them."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    x5c_only: bool = False  # publish keys as certificates only (Azure's style, minus n/e)

    @classmethod
    def make(cls, *slots: int, x5c_only: bool = False) -> Issuer:
        return cls({f"test-kid-{s}": rsa_key(s) for s in slots}, x5c_only)

    @property
    def kid(self) -> str:
        return next(iter(self.keys))

    def jwks(self, extra: list[dict[str, Any]] | None = None) -> str:
        entries = [
            jwk(kid, key, members=not self.x5c_only, x5c=self.x5c_only)
            for kid, key in self.keys.items()
        ]
        return json.dumps({"keys": entries + (extra or [])})

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        kid = kid or self.kid
        return jwt.encode(
            dict(claims), key or self.keys[kid], algorithm="RS256", headers={"kid": kid}
        )


def unsigned(claims: Mapping[str, Any], header: Mapping[str, Any]) -> str:
    """``alg: none``: header and claims with an empty signature."""
    head = b64url(json.dumps(dict(header)).encode())
    body = b64url(json.dumps(dict(claims)).encode())
    return f"{head}.{body}."


def hmac_signed(claims: Mapping[str, Any], secret: bytes, kid: str) -> str:
    """HS256 keyed with ``secret`` (an attacker's choice: e.g. the provider's public key PEM)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(dict(claims)).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def rs256_raw(claims: Mapping[str, Any], header: Mapping[str, Any], key: rsa.RSAPrivateKey) -> str:
    """An RS256 token with exactly this header (e.g. no kid)."""
    head = b64url(json.dumps(dict(header)).encode())
    body = b64url(json.dumps(dict(claims)).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(sig)}"


def tamper(token: str, **changes: Any) -> str:
    """The same header and signature over claims changed after signing."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ec_jwk(kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    x, y = (b64url(v.to_bytes(32, "big")) for v in (nums.x, nums.y))
    return {"kty": "EC", "crv": "P-256", "kid": kid, "x": x, "y": y}


def new_id() -> str:
    return str(uuid.uuid4())
