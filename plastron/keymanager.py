"""The KeyManager plugin protocol, and the ``memory`` and ``disk`` implementations.

A KeyManager holds private keys by id (``x509-CA-A``, ``JWT-Signer-B``, ``agent-svid-A``) and
hands out a ``cryptography`` private-key object whose ``sign()`` runs where the key lives, so
``CertificateBuilder.sign`` and PyJWT sign through an HSM or TPM unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import ConfigError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class KeyType(enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        for kt in cls:
            if kt.value == text:
                return kt
        allowed = ", ".join(kt.value for kt in cls)
        raise ConfigError(f"unknown key type {text!r}; expected one of {allowed}")


@dataclass(frozen=True)
class KeyInfo:
    """A key's id, type and public half; fingerprint = sha256 hex of the SPKI DER."""

    key_id: str
    key_type: KeyType
    public_key: PublicKey
    fingerprint: str


@runtime_checkable
class KeyManager(Protocol):
    """Holds private keys by id. Blocking implementations are called via an executor."""

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Create (or replace) the key ``key_id``; return its public key."""
        ...

    def get_public_key(self, key_id: str) -> PublicKey:
        """The public key for ``key_id``; raises NotFound if there is none."""
        ...

    def get_public_keys(self) -> list[KeyInfo]:
        """Every key this manager holds."""
        ...

    def signer(self, key_id: str) -> PrivateKey:
        """A cryptography private-key object for ``key_id`` whose sign() runs in the key store."""
        ...

    def destroy_key(self, key_id: str) -> None:
        """Remove ``key_id``; no-op if absent."""
        ...
