"""SPIFFE IDs and trust domains on the wire (spire.api.types.SPIFFEID, trust domain names)."""

from __future__ import annotations

from plastron.errors import InvalidArgument, PlastronError
from plastron.proto.spire.api.types import spiffeid_pb2
from plastron.spiffe.ids import SpiffeId, TrustDomain


def spiffe_id_from_proto(msg: spiffeid_pb2.SPIFFEID, field: str) -> SpiffeId:
    """The ID a message names, checked as the spec says; InvalidArgument naming ``field``."""
    if not msg.trust_domain:
        raise InvalidArgument(f"{field}: trust domain is missing")
    try:
        return SpiffeId.from_parts(msg.trust_domain, msg.path)
    except PlastronError as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


def spiffe_id_to_proto(sid: SpiffeId) -> spiffeid_pb2.SPIFFEID:
    return spiffeid_pb2.SPIFFEID(trust_domain=sid.trust_domain.name, path=sid.path)


def trust_domain_from_text(text: str, field: str) -> TrustDomain:
    """A trust domain name (or ``spiffe://`` ID of one); InvalidArgument naming ``field``."""
    try:
        return TrustDomain.parse(text)
    except PlastronError as exc:
        raise InvalidArgument(f"{field}: {exc}") from None
