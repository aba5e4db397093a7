"""A/B slots: the live X.509 CAs and JWT signing keys the server holds.

Each kind has two slots whose keys are ``x509-CA-A|B`` / ``JWT-Signer-A|B`` in the KeyManager.
One slot is *current* (its authority ACTIVE, signing), the other *next* (empty, PREPARED or OLD).
Rotation prepares into the next slot, then swaps the two.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import DataStoreError
from plastron.keymanager import PublicKey
from plastron.server.ca.journal import AuthorityStatus, JwtKeyRecord, X509CARecord
from plastron.wire.keys import spki_der

X509_KEY_IDS = {"A": "x509-CA-A", "B": "x509-CA-B"}
JWT_KEY_IDS = {"A": "JWT-Signer-A", "B": "JWT-Signer-B"}


def other_slot(slot_id: str) -> str:
    return "B" if slot_id == "A" else "A"


def authority_id_of(public_key: PublicKey) -> str:
    """SPIRE's X.509 authority id: hex SHA-1 SKID of the public key."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()


@dataclass(frozen=True)
class X509CA:
    """A loaded X.509 CA: ``certificate`` is the signing CA, ``chain`` its upstream
    intermediates (excluding the root that sits in the bundle)."""

    slot_id: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    issued_at: dt.datetime
    status: AuthorityStatus
    upstream_authority_id: str = ""

    @property
    def key_id(self) -> str:
        return X509_KEY_IDS[self.slot_id]

    @property
    def authority_id(self) -> str:
        return authority_id_of(self.public_key)

    @property
    def public_key(self) -> PublicKey:
        key = self.certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise DataStoreError("CA certificate key is neither EC nor RSA")
        return key

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def chain_after_leaf(self) -> tuple[x509.Certificate, ...]:
        """What follows a leaf it signs in the leaf's chain. Self-signed: nothing, the CA
        certificate is the bundle root. Upstream: the CA and the upstream intermediates (the
        upstream root is in the bundle)."""
        if not self.upstream_authority_id:
            return ()
        return (self.certificate, *self.chain)

    @functools.cached_property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @functools.cached_property
    def chain_after_leaf_der(self) -> tuple[bytes, ...]:
        """:attr:`chain_after_leaf` as DER, encoded once per CA rather than once per batch."""
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.chain_after_leaf)

    def with_status(self, status: AuthorityStatus) -> X509CA:
        return replace(self, status=status)

    def to_record(self) -> X509CARecord:
        der = serialization.Encoding.DER
        return X509CARecord(
            slot_id=self.slot_id,
            authority_id=self.authority_id,
            issued_at=self.issued_at,
            not_after=self.not_after,
            status=self.status,
            chain_der=tuple(c.public_bytes(der) for c in (self.certificate, *self.chain)),
            upstream_authority_id=self.upstream_authority_id,
        )

    @classmethod
    def from_record(cls, record: X509CARecord) -> X509CA:
        try:
            certs = [x509.load_der_x509_certificate(der) for der in record.chain_der]
        except ValueError as exc:
            raise DataStoreError(
                f"CA journal record {record.authority_id!r} holds a bad certificate: {exc}"
            ) from exc
        return cls(
            slot_id=record.slot_id,
            certificate=certs[0],
            chain=tuple(certs[1:]),
            issued_at=record.issued_at,
            status=record.status,
            upstream_authority_id=record.upstream_authority_id,
        )


@dataclass(frozen=True)
class JwtKey:
    """A loaded JWT signing key (public half; the private half stays in the KeyManager)."""

    slot_id: str
    kid: str
    public_key: PublicKey
    issued_at: dt.datetime
    not_after: dt.datetime
    status: AuthorityStatus

    @property
    def key_id(self) -> str:
        return JWT_KEY_IDS[self.slot_id]

    def with_status(self, status: AuthorityStatus) -> JwtKey:
        return replace(self, status=status)

    def to_record(self) -> JwtKeyRecord:
        return JwtKeyRecord(
            slot_id=self.slot_id,
            authority_id=self.kid,
            issued_at=self.issued_at,
            not_after=self.not_after,
            status=self.status,
            public_key_der=spki_der(self.public_key),
        )

    @classmethod
    def from_record(cls, record: JwtKeyRecord) -> JwtKey:
        try:
            key = serialization.load_der_public_key(record.public_key_der)
        except ValueError as exc:
            raise DataStoreError(
                f"CA journal JWT key {record.authority_id!r} cannot be parsed: {exc}"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise DataStoreError(f"CA journal JWT key {record.authority_id!r} is not EC or RSA")
        return cls(
            slot_id=record.slot_id,
            kid=record.authority_id,
            public_key=key,
            issued_at=record.issued_at,
            not_after=record.not_after,
            status=record.status,
        )
