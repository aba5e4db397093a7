"""X509-SVIDs: the SVID a workload holds (chain and key), with what builds, parses and validates
them; each of those lives in its own module and is importable from here too:
:mod:`~plastron.spiffe.x509mint` (SPIRE's template), :mod:`~plastron.spiffe.x509certs` (bounded
parsing, the SPIFFE ID of a certificate) and :mod:`~plastron.spiffe.x509validate` (the spec's
validation).

Spec: spiffe/spiffe standards/X509-SVID.md.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import FailedPrecondition, InvalidSvid
from plastron.keymanager import PrivateKey
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509certs import (
    CERTIFICATE_PARSE_ERRORS,
    MAX_CERT_DER_BYTES,
    MAX_CHAIN_CERTS,
    certificates_to_pem,
    load_der_certificate,
    load_pem_certificates,
    parse_der_chain,
    spiffe_id_from_certificate,
)
from plastron.spiffe.x509mint import (
    MAX_SERIAL,
    SERIAL_LIMIT,
    make_ca_certificate,
    make_x509_svid,
    make_x509_svid_der,
    random_serial,
)
from plastron.spiffe.x509validate import validate_x509_svid
from plastron.wire.keys import spki_der

__all__ = [
    "CERTIFICATE_PARSE_ERRORS",
    "MAX_CERT_DER_BYTES",
    "MAX_CHAIN_CERTS",
    "MAX_SERIAL",
    "SERIAL_LIMIT",
    "X509Svid",
    "certificates_to_pem",
    "load_der_certificate",
    "load_pem_certificates",
    "make_ca_certificate",
    "make_x509_svid",
    "make_x509_svid_der",
    "parse_der_chain",
    "random_serial",
    "spiffe_id_from_certificate",
    "validate_x509_svid",
]


@dataclass(frozen=True)
class X509Svid:
    """An X509-SVID: its ID, the chain (leaf first) and, when we hold it, the private key."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise InvalidSvid(f"X509-SVID for {self.spiffe_id} has an empty certificate chain")
        if not isinstance(self.chain, tuple):
            object.__setattr__(self, "chain", tuple(self.chain))
        leaf_id = spiffe_id_from_certificate(self.chain[0])
        if leaf_id != self.spiffe_id:
            raise InvalidSvid(f"leaf certificate is for {leaf_id}, not {self.spiffe_id}")

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def expires_at(self) -> _dt.datetime:
        return self.leaf.not_valid_after_utc

    def chain_der(self) -> bytes:
        """The chain as concatenated DER, as the Workload API and SPIRE's types carry it."""
        return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in self.chain)

    def key_pkcs8_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER (Workload API ``x509_svid_key``)."""
        if self.private_key is None:
            raise FailedPrecondition(f"X509-SVID for {self.spiffe_id} carries no private key")
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_der(cls, chain_der: bytes, key_der: bytes | None = None) -> X509Svid:
        """Parse a DER chain and optional PKCS#8 key; the key must match the leaf."""
        chain = parse_der_chain(chain_der)
        key: PrivateKey | None = None
        if key_der is not None:
            key = _load_pkcs8(key_der)
            if not _same_public_key(key.public_key(), chain[0].public_key()):
                raise InvalidSvid("X509-SVID private key does not match the leaf certificate")
        return cls(spiffe_id_from_certificate(chain[0]), tuple(chain), key)


def _load_pkcs8(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSvid("X509-SVID private key is not an unencrypted PKCS#8 DER key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidSvid(f"X509-SVID private key type {type(key).__name__} is not EC or RSA")
    return key


def _same_public_key(a: object, b: object) -> bool:
    if not isinstance(a, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    if not isinstance(b, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    return spki_der(a) == spki_der(b)
