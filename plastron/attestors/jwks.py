"""Signed JWTs from a cloud provider, verified offline against the provider's JSON Web Key Set:
the shared core of the ``gcp_iit`` and ``azure_msi`` attestors.

The rules, each a refusal with its own message prefixed by the method's name:

- the key set is a bounded JSON document (:data:`MAX_JWKS_BYTES`, :data:`MAX_JWKS_KEYS`) whose
  keys each carry a ``kid``, no ``kid`` twice; an RSA key is given by ``n``/``e``, by an ``x5c``
  certificate, or both (then they must agree); keys of other types are kept only to name them
  when a token asks for one;
- the token is a compact JWS, at most :data:`MAX_TOKEN_BYTES`, every part strict base64url and
  its header and claims strict JSON objects (no duplicate keys);
- ``alg`` is on an explicit allow-list (RS256): ``none`` and the HMAC family are refused by
  name, whatever the key set holds; ``kid`` is required and must name a key of the set (keys
  the token itself offers — ``jwk``, ``jku``, ``x5c``, ``x5u`` headers — are never used);
  ``crit`` is refused;
- ``exp`` and ``iat`` are required, ``nbf`` optional, all checked against the caller's explicit
  ``now`` with a leeway of at most :data:`MAX_LEEWAY`; audience and issuer are compared exactly.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from plastron.attestors.certificates import load_untrusted_der
from plastron.errors import AttestationFailed, InvalidArgument, InvalidBundle
from plastron.spiffe.jwk import public_key_from_jwk
from plastron.strict_json import load_untrusted_object

ALLOWED_ALGORITHMS = frozenset({"RS256"})
MAX_JWKS_BYTES = 512 * 1024
MAX_JWKS_KEYS = 100
MAX_TOKEN_BYTES = 16 * 1024
MAX_KID_CHARS = 256
MAX_LEEWAY = dt.timedelta(minutes=5)
_B64URL = frozenset(string.ascii_letters + string.digits + "-_")
_HASHES = {"RS256": hashes.SHA256}


class JwtRefused(AttestationFailed):
    """A token or key set that fails a rule; the message starts with the method's name."""


# ---- the key set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """The verification keys of a JWKS by ``kid``; ``unusable`` names keys of other types."""

    keys: Mapping[str, rsa.RSAPublicKey] = field(default_factory=dict)
    unusable: Mapping[str, str] = field(default_factory=dict)

    def __contains__(self, kid: object) -> bool:
        return kid in self.keys or kid in self.unusable

    def __len__(self) -> int:
        return len(self.keys) + len(self.unusable)


def parse_key_set(text: str | bytes, *, method: str) -> KeySet:
    """The key set in JWKS JSON ``text``; JwtRefused naming the first rule it breaks."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    doc = load_untrusted_object(
        data, limit=MAX_JWKS_BYTES, what=f"{method}: key set", error=JwtRefused
    )
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise JwtRefused(f"{method}: key set has no 'keys' array")
    if len(entries) > MAX_JWKS_KEYS:
        raise JwtRefused(f"{method}: key set has {len(entries)} keys; at most {MAX_JWKS_KEYS}")
    keys: dict[str, rsa.RSAPublicKey] = {}
    unusable: dict[str, str] = {}
    for index, jwk in enumerate(entries):
        if not isinstance(jwk, dict):
            raise JwtRefused(f"{method}: key set entry {index} is not a JSON object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise JwtRefused(f"{method}: key set entry {index} has no usable 'kid'")
        if kid in keys or kid in unusable:
            raise JwtRefused(f"{method}: key set has key id {kid!r} twice")
        kty = jwk.get("kty")
        if kty != "RSA":
            unusable[kid] = f"a {str(kty)[:16]!r} key"
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") not in ALLOWED_ALGORITHMS:
            unusable[kid] = f"for use {jwk.get('use')!r} / alg {jwk.get('alg')!r}"
            continue
        keys[kid] = _rsa_key(jwk, kid, method)
    return KeySet(keys, unusable)


def _rsa_key(jwk: Mapping[str, Any], kid: str, method: str) -> rsa.RSAPublicKey:
    from_members: object = None
    if "n" in jwk or "e" in jwk:
        try:
            from_members = public_key_from_jwk(jwk)
        except InvalidBundle as exc:
            raise JwtRefused(f"{method}: key {kid!r}: {exc}") from None
    from_cert = _x5c_key(jwk.get("x5c"), kid, method) if "x5c" in jwk else None
    key = from_members if from_members is not None else from_cert
    if not isinstance(key, rsa.RSAPublicKey):
        raise JwtRefused(f"{method}: key {kid!r} has neither n/e nor an RSA x5c certificate")
    if from_cert is not None and from_cert.public_numbers() != key.public_numbers():
        raise JwtRefused(f"{method}: key {kid!r}: its x5c certificate holds another key")
    return key


def _x5c_key(x5c: object, kid: str, method: str) -> rsa.RSAPublicKey:
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        raise JwtRefused(f"{method}: key {kid!r}: x5c must be a non-empty array of strings")
    try:
        der = base64.b64decode(x5c[0], validate=True)  # x5c is standard base64 (RFC 7517 4.7)
    except (binascii.Error, ValueError):
        raise JwtRefused(f"{method}: key {kid!r}: x5c[0] is not base64") from None
    cert = load_untrusted_der(der, f"key {kid!r} x5c[0]", lambda m: JwtRefused(f"{method}: {m}"))
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or not 2048 <= key.key_size <= 16384:
        raise JwtRefused(f"{method}: key {kid!r}: x5c[0] does not hold an RSA key of 2048+ bits")
    return key


# ---- the token ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedJwt:
    """A token whose signature verified with ``kid``: its header and claims."""

    kid: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def _b64url(part: str, what: str, method: str) -> bytes:
    if not part or any(ch not in _B64URL for ch in part) or len(part) % 4 == 1:
        raise JwtRefused(f"{method}: token {what} is not base64url without padding")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_part(part: str, what: str, method: str) -> dict[str, Any]:
    return load_untrusted_object(
        _b64url(part, what, method),
        limit=MAX_TOKEN_BYTES,
        what=f"{method}: token {what}",
        error=JwtRefused,
    )


def token_from_payload(payload: bytes, *, method: str) -> str:
    """The token an attestation payload carries as raw ASCII (bounded; InvalidArgument)."""
    if len(payload) > MAX_TOKEN_BYTES:
        raise InvalidArgument(f"{method}: payload is longer than {MAX_TOKEN_BYTES} bytes")
    try:
        return payload.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{method}: payload is not an ASCII token") from None


def header_kid(token: str) -> str | None:
    """The header's ``kid``, unverified, to pick or refresh the key set; None if unreadable
    (the verification that follows names the problem)."""
    head = token.partition(".")[0]
    if len(head) > MAX_TOKEN_BYTES or any(ch not in _B64URL for ch in head):
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, RecursionError, binascii.Error):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) and len(kid) <= MAX_KID_CHARS else None


def peek_claims(token: str, *, method: str) -> dict[str, Any]:
    """The claims of ``token`` WITHOUT verifying anything: only to choose which configuration
    (e.g. which tenant) a verification then runs with."""
    parts = _split(token, method)
    return _json_part(parts[1], "claims", method)


def _split(token: str, method: str) -> list[str]:
    if not isinstance(token, str) or not token:
        raise JwtRefused(f"{method}: token is empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise JwtRefused(f"{method}: token is longer than {MAX_TOKEN_BYTES} characters")
    if not token.isascii():
        raise JwtRefused(f"{method}: token is not ASCII")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtRefused(f"{method}: token is not a compact JWS (3 parts), it has {len(parts)}")
    return parts


def _check_header(header: Mapping[str, Any], method: str) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise JwtRefused(f"{method}: token header has no 'alg'")
    if alg.lower() == "none":
        raise JwtRefused(f"{method}: token alg 'none' is refused: a signature is required")
    if alg.upper().startswith("HS"):
        raise JwtRefused(f"{method}: token alg {alg[:16]!r} is refused: HMAC is not a signature")
    if alg not in ALLOWED_ALGORITHMS:
        allowed = ", ".join(sorted(ALLOWED_ALGORITHMS))
        raise JwtRefused(f"{method}: token alg {alg[:16]!r} is refused; allowed: {allowed}")
    if "crit" in header:
        raise JwtRefused(f"{method}: token header 'crit' names extensions not understood here")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwtRefused(f"{method}: token header has no 'kid'; a key id is required")
    if len(kid) > MAX_KID_CHARS:
        raise JwtRefused(f"{method}: token key id is longer than {MAX_KID_CHARS} characters")
    return alg, kid


def verify_signature(token: str, keys: KeySet, *, method: str) -> VerifiedJwt:
    """Check the header rules and the signature with the key the header's ``kid`` names."""
    head, body, sig = _split(token, method)
    header = _json_part(head, "header", method)
    alg, kid = _check_header(header, method)
    key = keys.keys.get(kid)
    if key is None:
        why = keys.unusable.get(kid)
        if why is not None:
            raise JwtRefused(f"{method}: token key id {kid!r} names {why}, not an RS256 key")
        raise JwtRefused(f"{method}: token key id {kid!r} is not in the key set")
    signature = _b64url(sig, "signature", method)
    if len(signature) != (key.key_size + 7) // 8:
        raise JwtRefused(f"{method}: token signature does not verify with key {kid!r}")
    try:
        key.verify(signature, f"{head}.{body}".encode("ascii"), padding.PKCS1v15(), _HASHES[alg]())
    except InvalidSignature:
        raise JwtRefused(f"{method}: token signature does not verify with key {kid!r}") from None
    return VerifiedJwt(kid, header, _json_part(body, "claims", method))


def verify_with(token: str, keys: str | KeySet, *, method: str) -> VerifiedJwt:
    """:func:`verify_signature` with ``keys`` as the JWKS's JSON text or already parsed."""
    key_set = keys if isinstance(keys, KeySet) else parse_key_set(keys, method=method)
    return verify_signature(token, key_set, method=method)


# ---- the claims --------------------------------------------------------------------------------


def numeric_date(claims: Mapping[str, Any], name: str, method: str) -> dt.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JwtRefused(f"{method}: token claim {name!r} is not a number")
    try:
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise JwtRefused(f"{method}: token claim {name!r} is out of range") from None


def check_times(
    claims: Mapping[str, Any], *, now: dt.datetime, leeway: dt.timedelta, method: str
) -> tuple[dt.datetime, dt.datetime]:
    """``exp`` and ``iat`` required, ``nbf`` optional, against ``now`` with ``leeway``; the
    token's (issued, expires) times."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not dt.timedelta(0) <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY}")
    expires = numeric_date(claims, "exp", method)
    issued = numeric_date(claims, "iat", method)
    if expires is None or issued is None:
        raise JwtRefused(f"{method}: token lacks the {'exp' if expires is None else 'iat'} claim")
    if now >= expires + leeway:
        raise JwtRefused(
            f"{method}: token expired at {expires.isoformat()} (now {now.isoformat()})"
        )
    if issued > now + leeway:
        raise JwtRefused(f"{method}: token is issued in the future ({issued.isoformat()})")
    not_before = numeric_date(claims, "nbf", method)
    if not_before is not None and now < not_before - leeway:
        raise JwtRefused(f"{method}: token is not valid before {not_before.isoformat()}")
    if issued >= expires:
        raise JwtRefused(f"{method}: token expires ({expires.isoformat()}) before it is issued")
    return issued, expires


def check_audience(claims: Mapping[str, Any], audience: str, *, method: str) -> None:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(a, str) for a in values):
        raise JwtRefused(f"{method}: token has no 'aud' claim of string(s)")
    if audience not in values:
        shown = ", ".join(repr(a[:200]) for a in values[:5])
        raise JwtRefused(f"{method}: token audience {shown} is not {audience!r}")


def check_issuer(claims: Mapping[str, Any], issuers: Collection[str], *, method: str) -> str:
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss not in issuers:
        expected = " or ".join(repr(i) for i in sorted(issuers))
        raise JwtRefused(f"{method}: token issuer {str(iss)[:200]!r} is not {expected}")
    return iss


def string_claim(claims: Mapping[str, Any], name: str, method: str, *, where: str = "") -> str:
    """A required, non-empty string claim."""
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise JwtRefused(f"{method}: token lacks the string claim {where}{name}")
    return value
