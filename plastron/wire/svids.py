"""SVIDs on the wire: X509-SVID chains (spire.api.types.X509SVID, DER certificates, the leaf
first) and JWT-SVIDs (spire.api.types.JWTSVID)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron.errors import InvalidSvid
from plastron.proto.spire.api.types import jwtsvid_pb2, x509svid_pb2
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.jwtsvid import parse_jwt_svid_insecure
from plastron.spiffe.x509svid import MAX_CHAIN_CERTS
from plastron.wire.ids import spiffe_id_to_proto


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


def chain_from_proto(msg: x509svid_pb2.X509SVID, field: str = "svid") -> list[x509.Certificate]:
    """The certificates of an X509-SVID message, leaf first (1 to ``MAX_CHAIN_CERTS``, each
    parsed); InvalidSvid naming ``field``. Validating the chain is the caller's business."""
    if not msg.cert_chain:
        raise InvalidSvid(f"{field}.cert_chain is empty")
    if len(msg.cert_chain) > MAX_CHAIN_CERTS:
        raise InvalidSvid(
            f"{field}.cert_chain: {len(msg.cert_chain)} certificates exceed the limit of "
            f"{MAX_CHAIN_CERTS}"
        )
    out = []
    for i, der in enumerate(msg.cert_chain):
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise InvalidSvid(f"{field}.cert_chain[{i}]: unparsable certificate: {exc}") from None
    return out


def jwt_svid_to_proto(token: str, sid: SpiffeId, hint: str = "") -> jwtsvid_pb2.JWTSVID:
    """A token the server just signed, with the expiry and issue time it carries."""
    parsed = parse_jwt_svid_insecure(token)
    return jwtsvid_pb2.JWTSVID(
        token=token,
        id=spiffe_id_to_proto(sid),
        expires_at=int(parsed.expires_at.timestamp()),
        issued_at=int(parsed.issued_at.timestamp()) if parsed.issued_at else 0,
        hint=hint,
    )
