"""Throwaway self-signed certificates for tests and benches: a CA to trust or to hand a plugin,
or a server's serving certificate, and their PEM files. SPIFFE credentials come from the
product's own builders (``plastron.spiffe.x509svid``); this is the plain X.509 around them.

Benches import it as ``tests.pki`` with the repository root on ``sys.path``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from plastron.spiffe.x509mint import CA_KEY_USAGE

__all__ = ["CA_KEY_USAGE", "SelfSigned", "self_signed"]

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SelfSigned:
    cert: x509.Certificate
    key: SigningKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(
        self, cert_path: Path, key_path: Path, *, key_mode: int | None = None
    ) -> tuple[Path, Path]:
        """Both PEM files (the key's mode set to ``key_mode`` when given); their paths."""
        cert_path.write_bytes(self.cert_pem())
        key_path.write_bytes(self.key_pem())
        if key_mode is not None:
            os.chmod(key_path, key_mode)
        return cert_path, key_path


def self_signed(
    subject: str | x509.Name,
    key: SigningKey | None = None,
    *,
    start: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=1),
    backdate: dt.timedelta = dt.timedelta(minutes=1),
    serial: int | None = None,
    ca: bool = False,
    key_usage: x509.KeyUsage | None = None,
    sans: Sequence[x509.GeneralName] = (),
    subject_key_id: bool = False,
) -> SelfSigned:
    """A certificate for ``subject`` (a common name, or a whole name) signed by its own ``key``
    (a new EC P-256 key by default) with SHA-256, valid from ``backdate`` before ``start`` (now
    by default; the margin absorbs clock skew) until ``lifetime`` after it. Only the extensions
    asked for are added: CA basic constraints, key usage, subject alternative names, subject
    key ID.
    """
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    if isinstance(subject, str):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    if start is None:
        start = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start - backdate)
        .not_valid_after(start + lifetime)
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if subject_key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return SelfSigned(builder.sign(key, hashes.SHA256()), key)
