"""A small test PKI for the x509pop tests: roots, intermediates and node leaves with the
properties each test needs (key type, validity, key usage, URI SANs). Real keys and real
certificates; nothing is mocked."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@functools.cache
def _cached_key(kind: str, slot: int) -> PrivateKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    bits = int(kind.removeprefix("rsa-"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_key(kind: str = "ec-p256", slot: int = 0) -> PrivateKey:
    """A key of ``kind``; the same (kind, slot) gives the same key within one test process,
    which keeps RSA generation out of the test time. Distinct slots give distinct keys."""
    return _cached_key(kind, slot)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey
    chain_above: list[x509.Certificate] = field(default_factory=list)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def make_ca(
    cn: str,
    *,
    parent: Issued | None = None,
    key: PrivateKey | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    is_ca: bool = True,
) -> Issued:
    key = key or new_key("ec-p256", slot=hash(cn) & 0xFFFF)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent.cert.subject if parent else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False,
        )
    signer = parent.key if parent else key
    cert = builder.sign(signer, hashes.SHA256())
    above = [parent.cert, *parent.chain_above] if parent else []
    return Issued(cert, key, above)


def make_leaf(
    issuer: Issued,
    *,
    cn: str | None = "node-7",
    key: PrivateKey | None = None,
    serial: int | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=30),
    digital_signature: bool = True,
    key_usage: bool = True,
    uris: tuple[str, ...] = (),
) -> Issued:
    key = key or new_key("ec-p256", slot=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn) if cn is not None else x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=not digital_signature,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    cert = builder.sign(issuer.key, hashes.SHA256())
    return Issued(cert, key, [issuer.cert, *issuer.chain_above])


def write_files(directory: Path, node: Issued, intermediates: list[Issued]) -> dict[str, str]:
    """Write the node's certificate, key and intermediates as PEM; returns agent plugin_data."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "node.crt.pem"
    key = directory / "node.key.pem"
    cert.write_bytes(node.pem())
    key.write_bytes(node.key_pem())
    key.chmod(0o600)
    data = {"certificate_path": str(cert), "private_key_path": str(key)}
    if intermediates:
        inter = directory / "intermediates.pem"
        inter.write_bytes(b"".join(i.pem() for i in intermediates))
        data["intermediates_path"] = str(inter)
    return data
