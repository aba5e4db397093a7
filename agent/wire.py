"""Server API messages ↔ the agent's typed values. Parse once here; bound every list."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from grpclib.exceptions import GRPCError

from plastron.agent.cache import WorkloadEntry
from plastron.errors import InvalidArgument, InvalidBundle, InvalidSvid
from plastron.keymanager import PrivateKey
from plastron.proto.spire.api.types import bundle_pb2, entry_pb2, status_pb2
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509svid import X509Svid, spiffe_id_from_certificate
from plastron.wire.bundles import bundle_from_proto
from plastron.wire.ids import spiffe_id_from_proto, trust_domain_from_text
from plastron.wire.keys import spki_der
from plastron.wire.limits import MAX_FEDERATES_WITH
from plastron.wire.selectors import selectors_from_proto


def bundle_from_server(msg: bundle_pb2.Bundle) -> Bundle:
    """A Bundle from the server's types.Bundle; InvalidBundle on anything malformed."""
    try:
        return bundle_from_proto(msg)
    except InvalidArgument as exc:
        raise InvalidBundle(f"bundle for {msg.trust_domain!r} is malformed: {exc}") from exc


def entry_from_proto(msg: entry_pb2.Entry) -> WorkloadEntry:
    if not msg.id:
        raise InvalidArgument("entry without an id")
    where = f"entry {msg.id}"
    if len(msg.federates_with) > MAX_FEDERATES_WITH:
        raise InvalidArgument(f"{where}: more than {MAX_FEDERATES_WITH} federated trust domains")
    return WorkloadEntry(
        entry_id=msg.id,
        spiffe_id=spiffe_id_from_proto(msg.spiffe_id, f"{where} spiffe_id"),
        selectors=frozenset(selectors_from_proto(msg.selectors, f"{where} selectors")),
        federates_with=frozenset(
            trust_domain_from_text(td, f"{where} federates_with") for td in msg.federates_with
        ),
        dns_names=tuple(msg.dns_names),
        hint=msg.hint,
        revision=msg.revision_number,
        admin=msg.admin,
        downstream=msg.downstream,
    )


def svid_with_key(chain: Sequence[x509.Certificate], key: PrivateKey) -> X509Svid:
    """An X509Svid whose leaf must certify ``key``: the server may not swap our key."""
    if spki_der(chain[0].public_key()) != spki_der(key.public_key()):
        raise InvalidSvid("server returned an SVID for a public key that is not ours")
    return X509Svid(spiffe_id_from_certificate(chain[0]), tuple(chain), key)


def csr_der(key: PrivateKey, spiffe_id: SpiffeId | None = None) -> bytes:
    """A PKCS#10 CSR carrying ``key``'s public half (the server uses only the key)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if spiffe_id is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def permission_denied_reason(exc: GRPCError) -> int | None:
    """SPIRE's PermissionDeniedDetails.reason carried in the error's status details."""
    for detail in exc.details or ():
        if isinstance(detail, status_pb2.PermissionDeniedDetails):
            return int(detail.reason)
    return None


REASONS = status_pb2.PermissionDeniedDetails
