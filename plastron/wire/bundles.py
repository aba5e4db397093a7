"""Trust bundles on the wire (spire.api.types.Bundle): X.509 authorities as DER certificates,
JWT authorities as SubjectPublicKeyInfo DER with their key ID."""

from __future__ import annotations

from collections.abc import Sequence

from plastron.clock import from_unix
from plastron.errors import InvalidArgument, PlastronError
from plastron.proto.spire.api.types import bundle_pb2
from plastron.spiffe.bundle import MAX_BUNDLE_KEYS, Bundle, JwtAuthority, X509Authority
from plastron.spiffe.x509svid import parse_der_chain
from plastron.wire.ids import trust_domain_from_text
from plastron.wire.keys import public_key_from_der, spki_der
from plastron.wire.svids import ca_der

MAX_INT64 = (1 << 63) - 1


def bundle_to_proto(bundle: Bundle, mask: bundle_pb2.BundleMask | None = None) -> bundle_pb2.Bundle:
    """``bundle`` as a message; with ``mask``, only the fields it selects (the trust domain
    always)."""

    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    msg = bundle_pb2.Bundle(trust_domain=bundle.trust_domain.name)
    if want("x509_authorities"):
        for a in bundle.x509_authorities:
            msg.x509_authorities.add(asn1=ca_der(a.certificate), tainted=a.tainted)
    if want("jwt_authorities"):
        for j in bundle.jwt_authorities:
            msg.jwt_authorities.add(
                public_key=spki_der(j.public_key),
                key_id=j.key_id,
                expires_at=int(j.expires_at.timestamp()) if j.expires_at else 0,
                tainted=j.tainted,
            )
    if want("refresh_hint"):
        # The message's field is int64; a bundle document may carry up to 2^64-1 seconds,
        # which means "never" either way.
        msg.refresh_hint = min(bundle.refresh_hint or 0, MAX_INT64)
    if want("sequence_number"):
        msg.sequence_number = bundle.sequence_number
    return msg


def x509_authorities_from_proto(
    msgs: Sequence[bundle_pb2.X509Certificate], field: str
) -> tuple[X509Authority, ...]:
    out = []
    for i, m in enumerate(msgs):
        try:
            certs = parse_der_chain(m.asn1, max_certs=1)
        except PlastronError as exc:
            raise InvalidArgument(f"{field}[{i}]: {exc}") from None
        if len(certs) != 1:
            raise InvalidArgument(f"{field}[{i}]: expected exactly one certificate")
        out.append(X509Authority(certificate=certs[0], tainted=m.tainted))
    return tuple(out)


def jwt_authorities_from_proto(
    msgs: Sequence[bundle_pb2.JWTKey], field: str
) -> tuple[JwtAuthority, ...]:
    out = []
    for i, m in enumerate(msgs):
        if not m.key_id:
            raise InvalidArgument(f"{field}[{i}].key_id: missing")
        key = public_key_from_der(m.public_key, f"{field}[{i}].public_key")
        expires_at = from_unix(m.expires_at) if m.expires_at > 0 else None
        try:
            out.append(JwtAuthority(m.key_id, key, expires_at, m.tainted))
        except PlastronError as exc:  # the authority's own checks (key ID length...)
            raise InvalidArgument(f"{field}[{i}]: {exc}") from None
    return tuple(out)


def bundle_from_proto(msg: bundle_pb2.Bundle, field: str = "bundle") -> Bundle:
    """The bundle a message carries, every authority parsed (none skipped); InvalidArgument
    naming the offending field."""
    count = len(msg.x509_authorities) + len(msg.jwt_authorities)
    if count > MAX_BUNDLE_KEYS:
        raise InvalidArgument(f"{field}: {count} authorities exceed the limit of {MAX_BUNDLE_KEYS}")
    td = trust_domain_from_text(msg.trust_domain, f"{field}.trust_domain")
    x509s = x509_authorities_from_proto(msg.x509_authorities, f"{field}.x509_authorities")
    jwts = jwt_authorities_from_proto(msg.jwt_authorities, f"{field}.jwt_authorities")
    try:
        return Bundle(
            trust_domain=td,
            x509_authorities=x509s,
            jwt_authorities=jwts,
            refresh_hint=msg.refresh_hint if msg.refresh_hint > 0 else None,
            sequence_number=msg.sequence_number,
        )
    except PlastronError as exc:  # the bundle's own checks (a repeated key ID...)
        raise InvalidArgument(f"{field}: {exc}") from None
