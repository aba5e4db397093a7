"""Registration entries and attested agents on the wire (spire.api.types.Entry, Agent).

An entry is validated here as SPIRE does (pkg/server/api/entry.go ProtoToRegistrationEntry):
every field checked, a bad one refused with InvalidArgument naming it (``entry.spiffe_id: …``).
"""

from __future__ import annotations

from plastron.errors import InvalidArgument
from plastron.proto.spire.api.types import agent_pb2, entry_pb2, spiffeid_pb2
from plastron.records import AttestedNode, RegistrationEntry
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.wire.ids import spiffe_id_from_proto, spiffe_id_to_proto, trust_domain_from_text
from plastron.wire.limits import (
    MAX_DNS_NAME_CHARS,
    MAX_DNS_NAMES,
    MAX_ENTRY_ID_CHARS,
    MAX_FEDERATES_WITH,
    MAX_HINT_CHARS,
    check_ttl,
)
from plastron.wire.selectors import selector_to_proto, selectors_from_proto

#: The Entry fields an EntryMask can select, in the message's order.
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


def entry_from_proto(msg: entry_pb2.Entry, td: TrustDomain) -> RegistrationEntry:
    """The entry a create or update request carries, for trust domain ``td``."""
    spiffe_id, parent_id = _entry_ids(msg, td)
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
    federates = _federates_with(msg, td)
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


def member_id_from_proto(msg: spiffeid_pb2.SPIFFEID, td: TrustDomain, field: str) -> SpiffeId:
    """An ID of ``td`` other than the trust domain's own (SPIRE: TrustDomainMemberIDFromProto)."""
    spiffe_id = spiffe_id_from_proto(msg, field)
    if not spiffe_id.member_of(td):
        raise InvalidArgument(f"{field}: {spiffe_id} is not a member of trust domain {td.name!r}")
    if not spiffe_id.path:
        raise InvalidArgument(f"{field}: {spiffe_id} has no path")
    return spiffe_id


def workload_id_from_proto(msg: spiffeid_pb2.SPIFFEID, td: TrustDomain, field: str) -> SpiffeId:
    """A member ID of ``td`` outside the reserved /spire namespace (SPIRE:
    TrustDomainWorkloadIDFromProto)."""
    spiffe_id = member_id_from_proto(msg, td, field)
    if spiffe_id.is_reserved():
        raise InvalidArgument(f"{field}: {spiffe_id} is in the reserved /spire namespace")
    return spiffe_id


def _entry_ids(msg: entry_pb2.Entry, td: TrustDomain) -> tuple[SpiffeId, SpiffeId]:
    """The entry's SPIFFE ID (a workload ID of ``td``) and parent ID (any ID of ``td``)."""
    if not msg.HasField("spiffe_id"):
        raise InvalidArgument("entry.spiffe_id: missing")
    if not msg.HasField("parent_id"):
        raise InvalidArgument("entry.parent_id: missing")
    spiffe_id = workload_id_from_proto(msg.spiffe_id, td, "entry.spiffe_id")
    parent_id = member_id_from_proto(msg.parent_id, td, "entry.parent_id")
    return spiffe_id, parent_id


def _federates_with(msg: entry_pb2.Entry, td: TrustDomain) -> tuple[TrustDomain, ...]:
    if len(msg.federates_with) > MAX_FEDERATES_WITH:
        raise InvalidArgument(f"entry.federates_with: more than {MAX_FEDERATES_WITH} entries")
    federates = tuple(trust_domain_from_text(t, "entry.federates_with") for t in msg.federates_with)
    if any(f == td for f in federates):
        raise InvalidArgument(
            f"entry.federates_with: cannot federate with the server's own trust domain {td.name!r}"
        )
    return federates


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
    """``entry`` as a message; with ``mask``, only the fields it selects (the ID always)."""

    def want(name: str) -> bool:
        return mask is None or bool(getattr(mask, name))

    msg = entry_pb2.Entry(id=entry.entry_id)
    if want("spiffe_id"):
        msg.spiffe_id.CopyFrom(spiffe_id_to_proto(entry.spiffe_id))
    if want("parent_id"):
        msg.parent_id.CopyFrom(spiffe_id_to_proto(entry.parent_id))
    if want("selectors"):
        msg.selectors.extend(selector_to_proto(s) for s in entry.selectors)
    if want("federates_with"):
        msg.federates_with.extend(td.name for td in entry.federates_with)
    if want("dns_names"):
        msg.dns_names.extend(entry.dns_names)
    for name in _SCALAR_FIELDS:
        if want(name):
            setattr(msg, name, getattr(entry, name))
    return msg


#: Entry fields that are copied as they are (the record names them the same).
_SCALAR_FIELDS = (
    "x509_svid_ttl",
    "jwt_svid_ttl",
    "admin",
    "downstream",
    "expires_at",
    "revision_number",
    "store_svid",
    "hint",
    "created_at",
)


def mask_fields(mask: entry_pb2.EntryMask | None) -> set[str] | None:
    """The entry fields an update mask selects (None: all)."""
    if mask is None:
        return None
    return {name for name in ENTRY_MASK_FIELDS if getattr(mask, name, False)}


def agent_to_proto(node: AttestedNode, mask: agent_pb2.AgentMask | None = None) -> agent_pb2.Agent:
    """An attested agent as a message; with ``mask``, only the fields it selects."""

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
