"""Conversions between SPIRE API messages (spire.api.types) and Plastron's typed records.

Parsing happens here, once, at the edge: every field is checked and a bad one raises
InvalidArgument naming the field (``entry.spiffe_id: …``), so handlers only see typed values.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import from_unix
from plastron.errors import InvalidArgument, PlastronError
from plastron.proto.spire.api.types import (
    agent_pb2,
    bundle_pb2,
    entry_pb2,
    selector_pb2,
    spiffeid_pb2,
    status_pb2,
    x509svid_pb2,
)
from plastron.selector import Selector
from plastron.server.api.status import item_status
from plastron.server.datastore.records import AttestedNode, RegistrationEntry
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import parse_der_chain
from plastron.wire.limits import (
    MAX_DNS_NAME_CHARS,
    MAX_DNS_NAMES,
    MAX_ENTRY_ID_CHARS,
    MAX_ENTRY_SELECTORS,
    MAX_FEDERATES_WITH,
    MAX_HINT_CHARS,
    check_ttl,
)


def _field_error(field: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(f"{field}: {exc}")


def spiffe_id_from_proto(msg: spiffeid_pb2.SPIFFEID, field: str) -> SpiffeId:
    if not msg.trust_domain:
        raise InvalidArgument(f"{field}: trust domain is missing")
    try:
        return SpiffeId.from_parts(msg.trust_domain, msg.path)
    except PlastronError as exc:
        raise _field_error(field, exc) from None


def spiffe_id_to_proto(sid: SpiffeId) -> spiffeid_pb2.SPIFFEID:
    return spiffeid_pb2.SPIFFEID(trust_domain=sid.trust_domain.name, path=sid.path)


def selector_from_proto(msg: selector_pb2.Selector, field: str) -> Selector:
    try:
        return Selector(msg.type, msg.value)
    except PlastronError as exc:
        raise _field_error(field, exc) from None


def selectors_from_proto(msgs: Iterable[selector_pb2.Selector], field: str) -> tuple[Selector, ...]:
    out = tuple(selector_from_proto(m, field) for m in msgs)
    if len(out) > MAX_ENTRY_SELECTORS:
        raise InvalidArgument(f"{field}: more than {MAX_ENTRY_SELECTORS} selectors")
    return out


def selector_to_proto(sel: Selector) -> selector_pb2.Selector:
    return selector_pb2.Selector(type=sel.type, value=sel.value)


def trust_domain_from_text(text: str, field: str) -> TrustDomain:
    try:
        return TrustDomain.parse(text)
    except PlastronError as exc:
        raise _field_error(field, exc) from None


def status(exc: BaseException | None) -> status_pb2.Status:
    code, message = item_status(exc)
    return status_pb2.Status(code=code, message=message)


# ---- entries --------------------------------------------------------------------------------


def entry_from_proto(msg: entry_pb2.Entry, td: TrustDomain) -> RegistrationEntry:
    """Validate an entry as SPIRE does (pkg/server/api/entry.go ProtoToRegistrationEntry)."""
    if not msg.HasField("spiffe_id"):
        raise InvalidArgument("entry.spiffe_id: missing")
    if not msg.HasField("parent_id"):
        raise InvalidArgument("entry.parent_id: missing")
    spiffe_id = spiffe_id_from_proto(msg.spiffe_id, "entry.spiffe_id")
    parent_id = spiffe_id_from_proto(msg.parent_id, "entry.parent_id")
    if not spiffe_id.member_of(td):
        raise InvalidArgument(
            f"entry.spiffe_id: {spiffe_id} is not a member of trust domain {td.name!r}"
        )
    if not spiffe_id.path:
        raise InvalidArgument(f"entry.spiffe_id: {spiffe_id} has no path")
    if spiffe_id.is_reserved():
        raise InvalidArgument(f"entry.spiffe_id: {spiffe_id} is in the reserved /spire namespace")
    if not parent_id.member_of(td):
        raise InvalidArgument(
            f"entry.parent_id: {parent_id} is not a member of trust domain {td.name!r}"
        )
    if not parent_id.path:
        raise InvalidArgument(f"entry.parent_id: {parent_id} has no path")
    if not msg.selectors:
        raise InvalidArgument("entry.selectors: at least one selector is required")
    selectors = selectors_from_proto(msg.selectors, "entry.selectors")
    check_ttl(msg.x509_svid_ttl, "entry.x509_svid_ttl")
    check_ttl(msg.jwt_svid_ttl, "entry.jwt_svid_ttl")
    if msg.expires_at < 0:
        raise InvalidArgument("entry.expires_at: must not be negative")
    if len(msg.hint) > MAX_HINT_CHARS:
        raise InvalidArgument(f"entry.hint: longer than {MAX_HINT_CHARS} characters")
    if len(msg.dns_names) > MAX_DNS_NAMES:
        raise InvalidArgument(f"entry.dns_names: more than {MAX_DNS_NAMES} names")
    for name in msg.dns_names:
        _check_dns_name(name)
    if len(msg.federates_with) > MAX_FEDERATES_WITH:
        raise InvalidArgument(f"entry.federates_with: more than {MAX_FEDERATES_WITH} entries")
    federates = tuple(trust_domain_from_text(t, "entry.federates_with") for t in msg.federates_with)
    if any(f == td for f in federates):
        raise InvalidArgument(
            f"entry.federates_with: cannot federate with the server's own trust domain {td.name!r}"
        )
    if len(msg.id) > MAX_ENTRY_ID_CHARS:
        raise InvalidArgument(f"entry.id: longer than {MAX_ENTRY_ID_CHARS} characters")
    return RegistrationEntry(
        entry_id=msg.id,
        spiffe_id=spiffe_id,
        parent_id=parent_id,
        selectors=tuple(sorted(set(selectors))),
        x509_svid_ttl=msg.x509_svid_ttl,
        jwt_svid_ttl=msg.jwt_svid_ttl,
        federates_with=tuple(sorted(set(federates))),
        admin=msg.admin,
        downstream=msg.downstream,
        expires_at=msg.expires_at,
        dns_names=tuple(msg.dns_names),
        store_svid=msg.store_svid,
        hint=msg.hint,
    )


def _check_dns_name(name: str) -> None:
    if not name or len(name) > MAX_DNS_NAME_CHARS:
        raise InvalidArgument(f"entry.dns_names: {name!r} is not a valid DNS name")
    labels = name.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0:
            continue
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise InvalidArgument(f"entry.dns_names: {name!r} is not a valid DNS name")
        if not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in label):
            raise InvalidArgument(f"entry.dns_names: {name!r} is not a valid DNS name")


def entry_to_proto(
    entry: RegistrationEntry, mask: entry_pb2.EntryMask | None = None
) -> entry_pb2.Entry:
    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    msg = entry_pb2.Entry(id=entry.entry_id)
    if want("spiffe_id"):
        msg.spiffe_id.CopyFrom(spiffe_id_to_proto(entry.spiffe_id))
    if want("parent_id"):
        msg.parent_id.CopyFrom(spiffe_id_to_proto(entry.parent_id))
    if want("selectors"):
        msg.selectors.extend(selector_to_proto(s) for s in entry.selectors)
    if want("x509_svid_ttl"):
        msg.x509_svid_ttl = entry.x509_svid_ttl
    if want("jwt_svid_ttl"):
        msg.jwt_svid_ttl = entry.jwt_svid_ttl
    if want("federates_with"):
        msg.federates_with.extend(td.name for td in entry.federates_with)
    if want("admin"):
        msg.admin = entry.admin
    if want("downstream"):
        msg.downstream = entry.downstream
    if want("expires_at"):
        msg.expires_at = entry.expires_at
    if want("dns_names"):
        msg.dns_names.extend(entry.dns_names)
    if want("revision_number"):
        msg.revision_number = entry.revision_number
    if want("store_svid"):
        msg.store_svid = entry.store_svid
    if want("hint"):
        msg.hint = entry.hint
    if want("created_at"):
        msg.created_at = entry.created_at
    return msg


ENTRY_MASK_FIELDS = (
    "spiffe_id",
    "parent_id",
    "selectors",
    "x509_svid_ttl",
    "federates_with",
    "admin",
    "downstream",
    "expires_at",
    "dns_names",
    "store_svid",
    "jwt_svid_ttl",
    "hint",
)


def mask_fields(mask: entry_pb2.EntryMask | None) -> set[str] | None:
    """The entry fields an update mask selects (None: all)."""
    if mask is None:
        return None
    return {name for name in ENTRY_MASK_FIELDS if getattr(mask, name, False)}


# ---- agents ---------------------------------------------------------------------------------


def agent_to_proto(node: AttestedNode, mask: agent_pb2.AgentMask | None = None) -> agent_pb2.Agent:
    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    msg = agent_pb2.Agent(id=spiffe_id_to_proto(node.spiffe_id))
    if want("attestation_type"):
        msg.attestation_type = node.attestation_type
    if want("x509svid_serial_number"):
        msg.x509svid_serial_number = node.cert_serial
    if want("x509svid_expires_at"):
        msg.x509svid_expires_at = node.cert_not_after
    if want("selectors"):
        msg.selectors.extend(selector_to_proto(s) for s in node.selectors)
    if want("banned"):
        msg.banned = node.cert_serial == ""
    if want("can_reattest"):
        msg.can_reattest = node.can_reattest
    if want("agent_version"):
        msg.agent_version = node.agent_version
    return msg


# ---- bundles --------------------------------------------------------------------------------


def bundle_to_proto(bundle: Bundle, mask: bundle_pb2.BundleMask | None = None) -> bundle_pb2.Bundle:
    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    msg = bundle_pb2.Bundle(trust_domain=bundle.trust_domain.name)
    if want("x509_authorities"):
        for a in bundle.x509_authorities:
            msg.x509_authorities.add(
                asn1=a.certificate.public_bytes(serialization.Encoding.DER), tainted=a.tainted
            )
    if want("jwt_authorities"):
        for j in bundle.jwt_authorities:
            msg.jwt_authorities.add(
                public_key=j.public_key.public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
                key_id=j.key_id,
                expires_at=int(j.expires_at.timestamp()) if j.expires_at else 0,
                tainted=j.tainted,
            )
    if want("refresh_hint"):
        msg.refresh_hint = bundle.refresh_hint or 0
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
        try:
            key = serialization.load_der_public_key(m.public_key)
        except ValueError:
            raise InvalidArgument(f"{field}[{i}].public_key: not a DER public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidArgument(f"{field}[{i}].public_key: only EC and RSA keys are supported")
        out.append(
            JwtAuthority(
                key_id=m.key_id,
                public_key=key,
                expires_at=from_unix(m.expires_at) if m.expires_at else None,
                tainted=m.tainted,
            )
        )
    return tuple(out)


def bundle_from_proto(msg: bundle_pb2.Bundle, field: str = "bundle") -> Bundle:
    td = trust_domain_from_text(msg.trust_domain, f"{field}.trust_domain")
    return Bundle(
        trust_domain=td,
        x509_authorities=x509_authorities_from_proto(
            msg.x509_authorities, f"{field}.x509_authorities"
        ),
        jwt_authorities=jwt_authorities_from_proto(msg.jwt_authorities, f"{field}.jwt_authorities"),
        refresh_hint=msg.refresh_hint or None,
        sequence_number=msg.sequence_number,
    )


# ---- SVIDs ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def ca_der(cert: x509.Certificate) -> bytes:
    """DER of a CA certificate that follows many leaves; ``public_bytes`` re-encodes each time
    (about 3x the cost of the hash lookup), and upstream chains repeat the same few CAs."""
    return cert.public_bytes(serialization.Encoding.DER)


def x509_svid_to_proto(
    chain: Sequence[x509.Certificate], sid: SpiffeId, hint: str = ""
) -> x509svid_pb2.X509SVID:
    return x509_svid_der_to_proto(
        [chain[0].public_bytes(serialization.Encoding.DER), *map(ca_der, chain[1:])],
        sid,
        chain[0].not_valid_after_utc,
        hint,
    )


def x509_svid_der_to_proto(
    chain: Sequence[bytes], sid: SpiffeId, not_after: dt.datetime, hint: str = ""
) -> x509svid_pb2.X509SVID:
    """As :func:`x509_svid_to_proto` for a chain already in DER whose leaf expires at
    ``not_after`` (a certificate's notAfter has whole seconds: the same integer)."""
    return x509svid_pb2.X509SVID(
        cert_chain=list(chain),
        id=spiffe_id_to_proto(sid),
        expires_at=int(not_after.timestamp()),
        hint=hint,
    )
