"""SPIFFE trust bundles: a trust domain's X.509 and JWT authorities.

Wire format (``to_jwks``/``from_jwks``): the SPIFFE bundle JWK Set of
spiffe/spiffe standards/SPIFFE_Trust_Domain_and_Bundle.md. Following §4.1.3/§4.2, entries with an
unknown or missing ``use`` or an unknown ``kty`` are ignored; entries we do understand are checked
strictly (one ``x5c`` certificate matching the key members, ``kid`` on JWT authorities, sound keys)
and a malformed one rejects the whole bundle rather than silently shrinking the trust set.

Storage format (``to_json``/``from_json``): a lossless internal document that also keeps the
``tainted`` flags and JWT key expiry, which the datastore keeps as the bundle blob.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import FailedPrecondition, InvalidBundle, InvalidSpiffeId, InvalidSvid
from plastron.keymanager import PublicKey
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwk import KNOWN_KEY_TYPES, public_key_from_jwk, public_key_to_jwk
from plastron.spiffe.x509svid import load_der_certificate
from plastron.wire.keys import spki_der

X509_SVID_USE = "x509-svid"
JWT_SVID_USE = "jwt-svid"
MAX_BUNDLE_BYTES = 4 * 1024 * 1024
MAX_BUNDLE_KEYS = 1024
MAX_KEY_ID_CHARS = 256
_MAX_UINT64 = (1 << 64) - 1
_JSON_VERSION = 1
_DER = serialization.Encoding.DER


def x509_authority_id(cert: x509.Certificate) -> str:
    """An X.509 authority's id as SPIRE's LocalAuthority API names it: its SKID in hex."""
    try:
        skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        skid = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return skid.hex()


@dataclass(frozen=True)
class JwtAuthority:
    key_id: str
    public_key: PublicKey
    expires_at: _dt.datetime | None = None
    tainted: bool = False

    def __post_init__(self) -> None:
        if not self.key_id or len(self.key_id) > MAX_KEY_ID_CHARS:
            raise InvalidBundle(f"JWT authority key id must be 1..{MAX_KEY_ID_CHARS} characters")
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidBundle(f"JWT authority {self.key_id!r} key must be EC or RSA")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise InvalidBundle(f"JWT authority {self.key_id!r} expiry must be timezone-aware")


@dataclass(frozen=True)
class X509Authority:
    certificate: x509.Certificate
    tainted: bool = False

    @property
    def authority_id(self) -> str:
        return x509_authority_id(self.certificate)


@dataclass(frozen=True)
class Bundle:
    """A trust domain's authorities. Mutators return a new Bundle with ``sequence_number + 1``."""

    trust_domain: TrustDomain
    x509_authorities: tuple[X509Authority, ...] = ()
    jwt_authorities: tuple[JwtAuthority, ...] = ()
    refresh_hint: int | None = None  # seconds
    sequence_number: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, TrustDomain):
            raise InvalidBundle("bundle trust_domain must be a TrustDomain")
        object.__setattr__(self, "x509_authorities", tuple(self.x509_authorities))
        object.__setattr__(self, "jwt_authorities", tuple(self.jwt_authorities))
        if self.refresh_hint is not None and not 0 <= self.refresh_hint <= _MAX_UINT64:
            raise InvalidBundle(f"bundle refresh hint {self.refresh_hint} is out of range")
        if not 0 <= self.sequence_number <= _MAX_UINT64:
            raise InvalidBundle(f"bundle sequence number {self.sequence_number} is out of range")
        kids = [a.key_id for a in self.jwt_authorities]
        if len(set(kids)) != len(kids):
            dup = next(k for k in kids if kids.count(k) > 1)
            raise InvalidBundle(f"bundle for {self.trust_domain} repeats JWT key id {dup!r}")

    # ---- views -------------------------------------------------------------------------------

    def x509_certificates(self) -> list[x509.Certificate]:
        return [a.certificate for a in self.x509_authorities]

    def x509_der(self) -> bytes:
        """The X.509 authorities as concatenated DER, as the Workload API carries bundles."""
        return b"".join(a.certificate.public_bytes(_DER) for a in self.x509_authorities)

    def jwt_keys(self) -> dict[str, PublicKey]:
        return {a.key_id: a.public_key for a in self.jwt_authorities}

    def to_pem(self) -> bytes:
        return b"".join(
            a.certificate.public_bytes(serialization.Encoding.PEM) for a in self.x509_authorities
        )

    # ---- changes -----------------------------------------------------------------------------

    def _bumped(self, **changes: Any) -> Bundle:
        return replace(self, sequence_number=self.sequence_number + 1, **changes)

    def with_x509_authority(self, cert: x509.Certificate, *, tainted: bool = False) -> Bundle:
        """Add ``cert`` unless present; an identical authority leaves the bundle unchanged."""
        for existing in self.x509_authorities:
            if existing.certificate == cert:
                if existing.tainted or not tainted:
                    return self
                return self.taint_x509_authority(existing.authority_id)
        return self._bumped(x509_authorities=(*self.x509_authorities, X509Authority(cert, tainted)))

    def with_jwt_authority(self, authority: JwtAuthority) -> Bundle:
        """Add ``authority``; the same kid with a different key is refused (as SPIRE does)."""
        for i, existing in enumerate(self.jwt_authorities):
            if existing.key_id != authority.key_id:
                continue
            if spki_der(existing.public_key) != spki_der(authority.public_key):
                raise InvalidBundle(
                    f"JWT key id {authority.key_id!r} is already in the bundle for "
                    f"{self.trust_domain} with a different key"
                )
            if existing == authority:
                return self
            updated = list(self.jwt_authorities)
            updated[i] = authority
            return self._bumped(jwt_authorities=tuple(updated))
        return self._bumped(jwt_authorities=(*self.jwt_authorities, authority))

    def taint_x509_authority(self, authority_id: str) -> Bundle:
        found = [a for a in self.x509_authorities if a.authority_id == authority_id]
        if not found:
            raise InvalidBundle(f"no X.509 authority {authority_id!r} in {self.trust_domain}")
        if all(a.tainted for a in found):
            return self
        return self._bumped(
            x509_authorities=tuple(
                replace(a, tainted=True) if a.authority_id == authority_id else a
                for a in self.x509_authorities
            )
        )

    def taint_jwt_authority(self, key_id: str) -> Bundle:
        if key_id not in self.jwt_keys():
            raise InvalidBundle(f"no JWT authority {key_id!r} in {self.trust_domain}")
        return self._bumped(
            jwt_authorities=tuple(
                replace(a, tainted=True) if a.key_id == key_id else a for a in self.jwt_authorities
            )
        )

    def without_x509_authority(self, authority_id: str) -> Bundle:
        kept = tuple(a for a in self.x509_authorities if a.authority_id != authority_id)
        if len(kept) == len(self.x509_authorities):
            raise InvalidBundle(f"no X.509 authority {authority_id!r} in {self.trust_domain}")
        return self._bumped(x509_authorities=kept)

    def without_jwt_authority(self, key_id: str) -> Bundle:
        kept = tuple(a for a in self.jwt_authorities if a.key_id != key_id)
        if len(kept) == len(self.jwt_authorities):
            raise InvalidBundle(f"no JWT authority {key_id!r} in {self.trust_domain}")
        return self._bumped(jwt_authorities=kept)

    def prune(self, now: _dt.datetime) -> Bundle:
        """Drop authorities that expired at or before ``now`` (SPIRE passes now - 24h).

        Like SPIRE, refuses (FailedPrecondition) to prune every X.509 authority.
        """
        x509s = tuple(a for a in self.x509_authorities if a.certificate.not_valid_after_utc > now)
        jwts = tuple(a for a in self.jwt_authorities if a.expires_at is None or a.expires_at > now)
        if self.x509_authorities and not x509s:
            raise FailedPrecondition(
                f"pruning the bundle for {self.trust_domain} at {now.isoformat()} would remove "
                f"every X.509 authority"
            )
        if len(x509s) == len(self.x509_authorities) and len(jwts) == len(self.jwt_authorities):
            return self
        return self._bumped(x509_authorities=x509s, jwt_authorities=jwts)

    # ---- SPIFFE bundle format ----------------------------------------------------------------

    def to_jwks(self) -> bytes:
        keys: list[dict[str, Any]] = []
        for xa in self.x509_authorities:
            jwk = public_key_to_jwk(xa.certificate.public_key())  # type: ignore[arg-type]
            jwk["use"] = X509_SVID_USE
            jwk["x5c"] = [base64.b64encode(xa.certificate.public_bytes(_DER)).decode("ascii")]
            keys.append(jwk)
        for ja in self.jwt_authorities:
            jwk = public_key_to_jwk(ja.public_key)
            jwk["use"] = JWT_SVID_USE
            jwk["kid"] = ja.key_id
            keys.append(jwk)
        doc: dict[str, Any] = {"keys": keys, "spiffe_sequence": self.sequence_number}
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = self.refresh_hint
        return json.dumps(doc, indent=4).encode()

    @classmethod
    def from_jwks(
        cls, trust_domain: TrustDomain, data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES
    ) -> Bundle:
        """Parse a SPIFFE bundle JWK Set for ``trust_domain``; InvalidBundle on anything wrong."""
        doc = _load_json_object(data, max_bytes, "SPIFFE bundle")
        return _parsed(
            lambda: _bundle_from_jwks_doc(trust_domain, doc),
            f"SPIFFE bundle for {trust_domain}",
            RecursionError,
        )

    # ---- internal storage format -------------------------------------------------------------

    def to_json(self) -> bytes:
        doc = {
            "version": _JSON_VERSION,
            "trust_domain": self.trust_domain.name,
            "sequence_number": self.sequence_number,
            "refresh_hint": self.refresh_hint,
            "x509_authorities": [
                {
                    "der": base64.b64encode(a.certificate.public_bytes(_DER)).decode(),
                    "tainted": a.tainted,
                }
                for a in self.x509_authorities
            ],
            "jwt_authorities": [
                {
                    "key_id": a.key_id,
                    "public_key": base64.b64encode(spki_der(a.public_key)).decode(),
                    "expires_at": a.expires_at.isoformat() if a.expires_at else None,
                    "tainted": a.tainted,
                }
                for a in self.jwt_authorities
            ],
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Bundle:
        doc = _load_json_object(data, MAX_BUNDLE_BYTES, "stored bundle")
        return _parsed(lambda: _bundle_from_storage_doc(doc), "stored bundle", InvalidSpiffeId)


# What reading a decoded document can raise on malformed content; anything else is a bug.
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


def _parsed(parse: Callable[[], Bundle], what: str, also: type[Exception]) -> Bundle:
    """``parse()``'s bundle; InvalidBundle naming ``what`` for malformed content (``also``: one
    more exception type that means malformed for this format)."""
    try:
        return parse()
    except InvalidBundle:
        raise
    except (*_MALFORMED, also) as exc:
        raise InvalidBundle(f"{what} is malformed: {exc}") from exc


def _load_json_object(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray):
        raise InvalidBundle(f"{what} must be bytes")
    if len(data) > max_bytes:
        raise InvalidBundle(f"{what} is {len(data)} bytes; limit {max_bytes}")
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidBundle(f"{what} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidBundle(f"{what} is not a JSON object")
    return doc


def _json_uint(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT64:
        raise InvalidBundle(f"{name} must be an unsigned 64-bit integer (got {str(value)[:32]!r})")
    return value


def _x509_from_jwk(jwk: Mapping[str, Any], index: int, key: PublicKey) -> X509Authority:
    x5c = jwk.get("x5c")
    if not isinstance(x5c, list) or len(x5c) != 1:
        count = len(x5c) if isinstance(x5c, list) else 0
        raise InvalidBundle(
            f"x509-svid entry {index} must carry exactly one x5c cert, found {count}"
        )
    if not isinstance(x5c[0], str):
        raise InvalidBundle(f"x509-svid entry {index} x5c value is not a string")
    try:
        cert = load_der_certificate(base64.b64decode(x5c[0], validate=True), "x5c certificate")
    except (binascii.Error, ValueError, InvalidSvid) as exc:
        raise InvalidBundle(f"x509-svid entry {index} x5c is not a DER certificate") from exc
    cert_key = cert.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidBundle(f"x509-svid entry {index} certificate key is not EC or RSA")
    if spki_der(cert_key) != spki_der(key):
        raise InvalidBundle(f"x509-svid entry {index} key members do not match its certificate")
    return X509Authority(cert)


def _jwt_from_jwk(jwk: Mapping[str, Any], index: int, key: PublicKey) -> JwtAuthority:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidBundle(f"jwt-svid entry {index} has no 'kid'; it is required")
    return JwtAuthority(kid, key)


def _bundle_from_jwks_doc(td: TrustDomain, doc: Mapping[str, Any]) -> Bundle:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise InvalidBundle(f"SPIFFE bundle for {td} has no 'keys' array")
    if len(keys) > MAX_BUNDLE_KEYS:
        raise InvalidBundle(f"SPIFFE bundle for {td} has {len(keys)} keys; limit {MAX_BUNDLE_KEYS}")
    x509s: list[X509Authority] = []
    jwts: dict[str, JwtAuthority] = {}
    for index, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            raise InvalidBundle(f"SPIFFE bundle entry {index} is not a JSON object")
        use = jwk.get("use")
        if use not in (X509_SVID_USE, JWT_SVID_USE):
            continue  # spec §4.2.2: ignore unknown (or absent) uses
        kty = jwk.get("kty")
        if not isinstance(kty, str):
            raise InvalidBundle(f"SPIFFE bundle entry {index} has no 'kty'")
        if kty not in KNOWN_KEY_TYPES:
            continue  # spec §4.2.1: ignore unknown key types
        key = public_key_from_jwk(jwk)
        if use == X509_SVID_USE:
            authority = _x509_from_jwk(jwk, index, key)
            if all(a.certificate != authority.certificate for a in x509s):
                x509s.append(authority)
        else:
            ja = _jwt_from_jwk(jwk, index, key)
            if ja.key_id in jwts:
                raise InvalidBundle(f"SPIFFE bundle for {td} repeats JWT key id {ja.key_id!r}")
            jwts[ja.key_id] = ja
    seq = doc.get("spiffe_sequence")
    hint = doc.get("spiffe_refresh_hint")
    return Bundle(
        trust_domain=td,
        x509_authorities=tuple(x509s),
        jwt_authorities=tuple(jwts.values()),
        refresh_hint=None if hint is None else _json_uint(hint, "spiffe_refresh_hint"),
        sequence_number=0 if seq is None else _json_uint(seq, "spiffe_sequence"),
    )


def _bundle_from_storage_doc(doc: Mapping[str, Any]) -> Bundle:
    if doc.get("version") != _JSON_VERSION:
        raise InvalidBundle(f"stored bundle version {str(doc.get('version'))[:16]!r} is unknown")
    x509s = []
    for item in doc["x509_authorities"]:
        cert = x509.load_der_x509_certificate(base64.b64decode(item["der"], validate=True))
        x509s.append(X509Authority(cert, tainted=item["tainted"] is True))
    jwts = []
    for item in doc["jwt_authorities"]:
        key = serialization.load_der_public_key(base64.b64decode(item["public_key"], validate=True))
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidBundle(f"stored JWT authority {item['key_id']!r} key is not EC or RSA")
        expires = item["expires_at"]
        jwts.append(
            JwtAuthority(
                key_id=str(item["key_id"]),
                public_key=key,
                expires_at=None if expires is None else _dt.datetime.fromisoformat(expires),
                tainted=item["tainted"] is True,
            )
        )
    hint = doc["refresh_hint"]
    return Bundle(
        trust_domain=TrustDomain(doc["trust_domain"]),
        x509_authorities=tuple(x509s),
        jwt_authorities=tuple(jwts),
        refresh_hint=None if hint is None else _json_uint(hint, "refresh_hint"),
        sequence_number=_json_uint(doc["sequence_number"], "sequence_number"),
    )
