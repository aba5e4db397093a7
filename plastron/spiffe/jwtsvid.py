"""JWT-SVIDs: mint them as SPIRE does and validate them per the spec.

Spec: spiffe/spiffe standards/JWT-SVID.md. Header ``alg`` + ``kid`` + ``typ: JWT``; claims
``sub``, ``aud``, ``exp``, ``iat``, optional ``iss``/``jti``. Like SPIRE (go-jose's
``jwt.Audience``), a single audience is emitted as a JSON string and several as an array; both
forms are accepted on validation.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import InvalidSpiffeId, InvalidSvid
from plastron.keymanager import PrivateKey, PublicKey
from plastron.spiffe.ids import SpiffeId
from plastron.wire.limits import MAX_JWT_TOKEN_AUDIENCES

MAX_TOKEN_BYTES = 64 * 1024
MAX_KEY_ID_CHARS = 256
ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
)
_EC_ALG_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_KEY_ID_ALPHABET = string.ascii_letters + string.digits


def new_key_id() -> str:
    """A JWT authority key id: 32 random [a-zA-Z0-9] characters, as SPIRE makes them."""
    return "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(32))


def algorithm_for_key(key: PrivateKey | PublicKey) -> str:
    """The JWS alg SPIRE uses for a key: ES256/ES384/ES512 by curve, RS256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        for alg, curve in _EC_ALG_CURVES.items():
            if key.curve.name == curve:
                return alg
        raise InvalidSvid(f"EC curve {key.curve.name!r} is not usable for JWT-SVIDs")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InvalidSvid(f"RSA key of {key.key_size} bits is too small; minimum 2048")
        return "RS256"
    raise InvalidSvid(f"key type {type(key).__name__} is not usable for JWT-SVIDs")


def _unix(when: _dt.datetime, name: str) -> int:
    if when.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {when.isoformat()})")
    return int(when.timestamp())


def _check_audience_list(audience: Sequence[str]) -> tuple[str, ...]:
    if isinstance(audience, str):
        audience = (audience,)
    auds = tuple(audience)
    if not auds:
        raise InvalidSvid("JWT-SVID audience is empty; at least one is required")
    if len(auds) > MAX_JWT_TOKEN_AUDIENCES:
        raise InvalidSvid(f"JWT-SVID has {len(auds)} audiences; limit {MAX_JWT_TOKEN_AUDIENCES}")
    for aud in auds:
        if not isinstance(aud, str) or not aud:
            raise InvalidSvid(f"JWT-SVID audience {aud!r} must be a non-empty string")
    return auds


def mint_jwt_svid(
    *,
    spiffe_id: SpiffeId,
    audience: Sequence[str],
    issued_at: _dt.datetime,
    expires_at: _dt.datetime,
    key: PrivateKey,
    key_id: str,
    issuer: str | None = None,
    jti: str | None = None,
) -> str:
    """Sign a JWT-SVID with ``key`` (any cryptography private key, including HSM adapters)."""
    auds = _check_audience_list(audience)
    if not key_id or len(key_id) > MAX_KEY_ID_CHARS:
        raise InvalidSvid(f"JWT key id must be 1..{MAX_KEY_ID_CHARS} characters")
    iat, exp = _unix(issued_at, "issued_at"), _unix(expires_at, "expires_at")
    if exp <= iat:
        raise InvalidSvid(
            f"JWT-SVID expires_at {expires_at.isoformat()} is not after issued_at "
            f"{issued_at.isoformat()}"
        )
    claims: dict[str, Any] = {
        "sub": str(spiffe_id),
        "aud": auds[0] if len(auds) == 1 else list(auds),
        "exp": exp,
        "iat": iat,
    }
    if issuer:
        claims["iss"] = issuer
    if jti:
        claims["jti"] = jti
    alg = algorithm_for_key(key)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": key_id, "typ": "JWT"})


@dataclass(frozen=True)
class JwtSvid:
    """A parsed JWT-SVID. ``token`` is a bearer credential: it is kept out of ``repr``."""

    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    expires_at: _dt.datetime
    issued_at: _dt.datetime | None
    claims: Mapping[str, Any] = field(compare=False)
    token: str = field(repr=False)


def _b64url_json(part: str, what: str) -> dict[str, Any]:
    if any(ch not in string.ascii_letters + string.digits + "-_" for ch in part):
        raise InvalidSvid(f"JWT-SVID {what} is not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise InvalidSvid(f"JWT-SVID {what} is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise InvalidSvid(f"JWT-SVID {what} is not a JSON object")
    return value


def _split_compact(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(token, str):
        raise InvalidSvid("JWT-SVID must be a string")
    size = len(token.encode("utf-8", "replace"))
    if size > MAX_TOKEN_BYTES:
        raise InvalidSvid(f"JWT-SVID is {size} bytes; limit {MAX_TOKEN_BYTES}")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidSvid(
            f"JWT-SVID must be a compact JWS of 3 dot-separated parts, found {len(parts)}"
        )
    return _b64url_json(parts[0], "header"), _b64url_json(parts[1], "payload")


def _check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidSvid("JWT-SVID header has no 'alg'")
    if alg.lower() == "none":
        raise InvalidSvid("JWT-SVID alg 'none' is not allowed; a signature is required")
    if alg.upper().startswith("HS"):
        raise InvalidSvid(f"JWT-SVID alg {alg[:16]!r} is not allowed; HMAC algorithms are refused")
    if alg not in ALLOWED_ALGS:
        allowed = ", ".join(sorted(ALLOWED_ALGS))
        raise InvalidSvid(f"JWT-SVID alg {alg[:16]!r} is not allowed; expected one of {allowed}")
    typ = header.get("typ")
    if typ is not None and typ not in ("JWT", "JOSE"):
        raise InvalidSvid(f"JWT-SVID header typ {str(typ)[:32]!r} must be 'JWT' or 'JOSE'")
    if "crit" in header:
        raise InvalidSvid("JWT-SVID header 'crit' names extensions this validator does not know")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidSvid("JWT-SVID header has no 'kid'; a key id is required")
    if len(kid) > MAX_KEY_ID_CHARS:
        raise InvalidSvid(f"JWT-SVID key id is longer than {MAX_KEY_ID_CHARS} characters")
    return alg, kid


def _check_key_matches_alg(alg: str, kid: str, key: PublicKey) -> None:
    if alg in _EC_ALG_CURVES:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _EC_ALG_CURVES[alg]:
            raise InvalidSvid(f"JWT-SVID alg {alg} does not match the type of key {kid!r}")
    elif not isinstance(key, rsa.RSAPublicKey):
        raise InvalidSvid(f"JWT-SVID alg {alg} does not match the type of key {kid!r}")


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> _dt.datetime | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidSvid(f"JWT-SVID has no '{name}' claim; it is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSvid(f"JWT-SVID '{name}' claim must be a number (got {type(value).__name__})")
    try:
        return _dt.datetime.fromtimestamp(value, tz=_dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidSvid(f"JWT-SVID '{name}' claim {value!r} is out of range") from exc


def _claims_to_svid(claims: dict[str, Any], token: str) -> JwtSvid:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidSvid("JWT-SVID has no 'sub' claim; it must hold the SPIFFE ID")
    try:
        sid = SpiffeId.parse(sub)
    except InvalidSpiffeId as exc:
        raise InvalidSvid(f"JWT-SVID 'sub' claim is not a valid SPIFFE ID: {exc}") from exc
    aud = claims.get("aud")
    if aud is None:
        raise InvalidSvid("JWT-SVID has no 'aud' claim; it is required")
    if isinstance(aud, str):
        aud = [aud]
    if not isinstance(aud, list):
        raise InvalidSvid("JWT-SVID 'aud' claim must be a string or an array of strings")
    audience = _check_audience_list(aud)
    expires_at = _numeric_date(claims, "exp", required=True)
    if expires_at is None:  # unreachable: required=True raises; keeps the type narrow
        raise InvalidSvid("JWT-SVID has no 'exp' claim; it is required")
    issued_at = _numeric_date(claims, "iat", required=False)
    return JwtSvid(sid, audience, expires_at, issued_at, claims, token)


def parse_jwt_svid_insecure(token: str) -> JwtSvid:
    """Parse a JWT-SVID WITHOUT checking its signature, audience or expiry.

    Only for tokens this process obtained itself over an authenticated channel (the agent's
    cache reading its own SVIDs' expiry). Never use it to authenticate a caller.
    """
    header, claims = _split_compact(token)
    _check_header(header)
    return _claims_to_svid(claims, token)


def validate_jwt_svid(
    token: str,
    *,
    audience: str | Sequence[str],
    authorities: Mapping[str, PublicKey],
    now: _dt.datetime,
) -> JwtSvid:
    """Verify a JWT-SVID: header, signature by ``authorities[kid]``, exp, aud and sub.

    Every expected audience must be in the token's ``aud``.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (got naive {now.isoformat()})")
    expected = _check_audience_list(audience)
    header, _ = _split_compact(token)
    alg, kid = _check_header(header)
    key = authorities.get(kid)
    if key is None:
        raise InvalidSvid(f"JWT-SVID key id {kid!r} is not a JWT authority of this bundle")
    _check_key_matches_alg(alg, kid, key)
    try:
        payload = jwt.api_jws.decode_complete(token, key, algorithms=[alg])["payload"]
    except jwt.exceptions.InvalidSignatureError as exc:
        raise InvalidSvid(f"JWT-SVID signature does not verify with key {kid!r}") from exc
    except jwt.exceptions.PyJWTError as exc:
        raise InvalidSvid(f"JWT-SVID could not be verified with key {kid!r}: {exc}") from exc
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise InvalidSvid("JWT-SVID payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise InvalidSvid("JWT-SVID payload is not a JSON object")
    svid = _claims_to_svid(claims, token)
    if now >= svid.expires_at:
        raise InvalidSvid(f"JWT-SVID for {svid.spiffe_id} expired at {svid.expires_at.isoformat()}")
    not_before = _numeric_date(claims, "nbf", required=False)
    if not_before is not None and now < not_before:
        raise InvalidSvid(
            f"JWT-SVID for {svid.spiffe_id} is not valid before {not_before.isoformat()}"
        )
    for aud in expected:
        if aud not in svid.audience:
            raise InvalidSvid(
                f"JWT-SVID for {svid.spiffe_id} is not for audience {aud!r} "
                f"(token audiences: {list(svid.audience)!r})"
            )
    return svid
