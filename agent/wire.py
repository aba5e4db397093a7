"""Server API messages ↔ the agent's typed values. Parse once here; bound every list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpclib.exceptions import GRPCError

from plastron.agent.cache import WorkloadEntry
from plastron.clock import from_unix
from plastron.errors import InvalidArgument, InvalidBundle, InvalidSvid
from plastron.keymanager import PrivateKey
from plastron.proto.spire.api.types import bundle_pb2, entry_pb2, status_pb2, x509svid_pb2
from plastron.selector import Selector
from plastron.spiffe.bundle import MAX_BUNDLE_KEYS, Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import MAX_CHAIN_CERTS, X509Svid, spiffe_id_from_certificate
from plastron.wire.limits import MAX_ENTRY_SELECTORS, MAX_FEDERATES_WITH


def spiffe_id_from_proto(msg: Any, what: str) -> SpiffeId:
    try:
        return SpiffeId.from_parts(msg.trust_domain, msg.path)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc


def bundle_from_proto(msg: bundle_pb2.Bundle) -> Bundle:
    """A Bundle from the server's types.Bundle; InvalidBundle on anything malformed."""
    count = len(msg.x509_authorities) + len(msg.jwt_authorities)
    if count > MAX_BUNDLE_KEYS:
        raise InvalidBundle(f"bundle has {count} authorities; limit {MAX_BUNDLE_KEYS}")
    try:
        td = TrustDomain.parse(msg.trust_domain)
        x509s = tuple(
            X509Authority(x509.load_der_x509_certificate(a.asn1), a.tainted)
            for a in msg.x509_authorities
        )
        jwts = []
        for key in msg.jwt_authorities:
            public = serialization.load_der_public_key(key.public_key)
            if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise InvalidBundle(f"JWT authority {key.key_id!r} is not an EC or RSA key")
            expires = from_unix(key.expires_at) if key.expires_at else None
            jwts.append(JwtAuthority(key.key_id, public, expires, key.tainted))
        return Bundle(td, x509s, tuple(jwts), msg.refresh_hint or None, msg.sequence_number)
    except (ValueError, InvalidArgument) as exc:
        raise InvalidBundle(f"bundle for {msg.trust_domain!r} is malformed: {exc}") from exc


def entry_from_proto(msg: entry_pb2.Entry) -> WorkloadEntry:
    if not msg.id:
        raise InvalidArgument("entry without an id")
    if len(msg.selectors) > MAX_ENTRY_SELECTORS or len(msg.federates_with) > MAX_FEDERATES_WITH:
        raise InvalidArgument(f"entry {msg.id}: too many selectors or federated trust domains")
    return WorkloadEntry(
        entry_id=msg.id,
        spiffe_id=spiffe_id_from_proto(msg.spiffe_id, f"entry {msg.id} spiffe_id"),
        selectors=frozenset(Selector(s.type, s.value) for s in msg.selectors),
        federates_with=frozenset(TrustDomain.parse(td) for td in msg.federates_with),
        dns_names=tuple(msg.dns_names),
        hint=msg.hint,
        revision=msg.revision_number,
    )


def chain_from_proto(msg: x509svid_pb2.X509SVID) -> list[x509.Certificate]:
    if not msg.cert_chain:
        raise InvalidSvid("server returned an X509-SVID with an empty chain")
    if len(msg.cert_chain) > MAX_CHAIN_CERTS:
        raise InvalidSvid(f"server returned a chain of {len(msg.cert_chain)} certificates")
    try:
        return [x509.load_der_x509_certificate(der) for der in msg.cert_chain]
    except ValueError as exc:
        raise InvalidSvid(f"server returned an unparsable certificate: {exc}") from exc


def svid_with_key(chain: Sequence[x509.Certificate], key: PrivateKey) -> X509Svid:
    """An X509Svid whose leaf must certify ``key``: the server may not swap our key."""
    leaf_key = chain[0].public_key()
    ours = key.public_key()
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf_key.public_bytes(der, spki) != ours.public_bytes(der, spki):
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
