"""Public keys as JSON Web Keys (RFC 7517/7518): the key members of SPIFFE bundle entries."""

from __future__ import annotations

import base64
import binascii
import string
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import InvalidBundle
from plastron.keymanager import PublicKey

_CURVES: dict[str, tuple[str, ec.EllipticCurve, int]] = {
    # JWK crv -> (cryptography curve name, curve, coordinate octets)
    "P-256": ("secp256r1", ec.SECP256R1(), 32),
    "P-384": ("secp384r1", ec.SECP384R1(), 48),
    "P-521": ("secp521r1", ec.SECP521R1(), 66),
}
_B64URL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
KNOWN_KEY_TYPES = frozenset({"EC", "RSA"})


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object, what: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2)."""
    if not isinstance(text, str) or not text:
        raise InvalidBundle(f"JWK member {what} must be a non-empty base64url string")
    if any(ch not in _B64URL_CHARS for ch in text) or len(text) % 4 == 1:
        raise InvalidBundle(f"JWK member {what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidBundle(f"JWK member {what} is not base64url") from exc


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def public_key_to_jwk(key: PublicKey) -> dict[str, Any]:
    """The ``kty`` and key members of a JWK for an EC or RSA public key."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        for crv, (name, _curve, size) in _CURVES.items():
            if key.curve.name == name:
                nums = key.public_numbers()
                return {
                    "kty": "EC",
                    "crv": crv,
                    "x": b64url_encode(nums.x.to_bytes(size, "big")),
                    "y": b64url_encode(nums.y.to_bytes(size, "big")),
                }
        raise InvalidBundle(f"EC curve {key.curve.name!r} has no JWK name")
    if isinstance(key, rsa.RSAPublicKey):
        rsa_nums = key.public_numbers()
        return {
            "kty": "RSA",
            "n": b64url_encode(_uint_bytes(rsa_nums.n)),
            "e": b64url_encode(_uint_bytes(rsa_nums.e)),
        }
    raise InvalidBundle(f"key type {type(key).__name__} cannot be written as a JWK")


def _ec_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise InvalidBundle(f"EC JWK curve {str(crv)[:16]!r} is not P-256, P-384 or P-521")
    _name, curve, size = _CURVES[crv]
    x, y = b64url_decode(jwk.get("x"), "x"), b64url_decode(jwk.get("y"), "y")
    if len(x) != size or len(y) != size:
        raise InvalidBundle(f"EC JWK coordinates for {crv} must be {size} bytes each")
    nums = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve)
    try:
        return nums.public_key()
    except ValueError as exc:
        raise InvalidBundle(f"EC JWK point is not on curve {crv}") from exc


def _rsa_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64url_decode(jwk.get("n"), "n"), "big")
    e = int.from_bytes(b64url_decode(jwk.get("e"), "e"), "big")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise InvalidBundle(
            f"RSA JWK modulus is {n.bit_length()} bits; allowed {MIN_RSA_BITS}..{MAX_RSA_BITS}"
        )
    if e < 3 or e % 2 == 0 or e.bit_length() > 64:
        raise InvalidBundle(f"RSA JWK public exponent {e} is not an odd integer in 3..2^64")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise InvalidBundle(f"RSA JWK parameters are invalid: {exc}") from exc


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Parse the key members of an EC or RSA JWK; InvalidBundle if they are malformed."""
    kty = jwk.get("kty")
    if kty == "EC":
        return _ec_from_jwk(jwk)
    if kty == "RSA":
        return _rsa_from_jwk(jwk)
    raise InvalidBundle(f"JWK key type {str(kty)[:16]!r} is not supported")
