"""A fake AWS signer for tests: per-region test keys and certificates, instance identity
documents shaped as the metadata service serves them, and the three signatures (``rsa2048``
CMS in AWS's BER shape, raw ``signature``, DSA ``pkcs7``). Production verification runs
unchanged: tests register the fake certificates as extra certificates for a fake region."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.x509.oid import NameOID

from plastron.attestors.aws_iid import AwsCertificates

REGION = "test-region-1"
OTHER_REGION = "test-region-2"
ACCOUNT = "123456789012"
SigningKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey


@cache
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def _dsa_key(slot: int) -> dsa.DSAPrivateKey:
    return dsa.generate_private_key(key_size=2048)


def make_certificate(
    key: SigningKey, name: str, *, not_before: dt.datetime, not_after: dt.datetime, serial: int
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Web Services"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


@dataclass
class FakeSigner:
    """One region's three test keys and their certificates."""

    region: str = REGION
    slot: int = 0
    not_before: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    not_after: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    )

    def __post_init__(self) -> None:
        self.rsa2048_key = _rsa_key(3 * self.slot)
        self.rsa_key = _rsa_key(3 * self.slot + 1)
        self.dsa_key = _dsa_key(self.slot)
        base = 1000 + 10 * self.slot
        span = {"not_before": self.not_before, "not_after": self.not_after}
        self.rsa2048_cert = make_certificate(
            self.rsa2048_key, f"{self.region} rsa2048", serial=base + 1, **span
        )
        self.rsa_cert = make_certificate(
            self.rsa_key, f"{self.region} rsa", serial=base + 2, **span
        )
        self.dsa_cert = make_certificate(
            self.dsa_key, f"{self.region} dsa", serial=base + 3, **span
        )

    def certificates(self, base: AwsCertificates | None = None) -> AwsCertificates:
        table = base if base is not None else AwsCertificates({})
        return (
            table.with_extra("rsa2048", self.region, [self.rsa2048_cert])
            .with_extra("rsa", self.region, [self.rsa_cert])
            .with_extra("dsa", self.region, [self.dsa_cert])
        )

    def pem(self, kind: str) -> bytes:
        cert = {"rsa2048": self.rsa2048_cert, "rsa": self.rsa_cert, "dsa": self.dsa_cert}[kind]
        return cert.public_bytes(serialization.Encoding.PEM)

    # ---- signatures, as the metadata service serves them (base64 text) -------------------

    def signature(self, document: bytes) -> str:
        raw = self.rsa_key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        return _wrap(raw)

    def rsa2048(self, document: bytes, **options: Any) -> str:
        return _wrap(sign_cms(document, self.rsa2048_key, self.rsa2048_cert, **options))

    def pkcs7(self, document: bytes, **options: Any) -> str:
        options.setdefault("digest", "sha1")
        return _wrap(sign_cms(document, self.dsa_key, self.dsa_cert, **options))

    def signatures(self, document: bytes) -> dict[str, str]:
        """What SPIRE's agent sends beside the document: ``signature`` and ``rsa2048``."""
        return {"signature": self.signature(document), "rsa2048": self.rsa2048(document)}


def _wrap(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def make_document(
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    instance_id: str = "i-0123456789abcdef0",
    pending: dt.datetime | None = None,
    **extra: Any,
) -> bytes:
    """A document laid out as the metadata service serves it (pretty JSON, no newline)."""
    when = pending or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    body: dict[str, Any] = {
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": f"{region}a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": instance_id,
        "instanceType": "t3.micro",
        "kernelId": None,
        "pendingTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": "10.0.0.7",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    body.update(extra)
    return json.dumps(body, indent=2, separators=(",", " : ")).encode()


def sign_cms(
    content: bytes,
    key: SigningKey,
    cert: x509.Certificate,
    *,
    digest: str = "sha256",
    signed_content: bytes | None = None,
    signing_time: dt.datetime | None = None,
    attributes: list[asn1_cms.CMSAttribute] | None = None,
    detached: bool = False,
    ber: bool = True,
    named: x509.Certificate | None = None,
) -> bytes:
    """A SignedData over ``content`` (``signed_content`` goes inside instead, when given),
    its signer named as ``named`` (default: ``cert``)."""
    hash_algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[digest]
    inside = content if signed_content is None else signed_content
    h = hashes.Hash(hash_algorithm)
    h.update(inside)
    when = signing_time or dt.datetime.now(dt.UTC).replace(microsecond=0)
    attrs = asn1_cms.CMSAttributes(
        attributes
        if attributes is not None
        else [
            asn1_cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            asn1_cms.CMSAttribute(
                {"type": "signing_time", "values": [asn1_cms.Time({"utc_time": when})]}
            ),
            asn1_cms.CMSAttribute({"type": "message_digest", "values": [h.finalize()]}),
        ]
    )
    to_sign = attrs.dump(force=True)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hash_algorithm)
        sig_alg = f"{digest}_rsa"
    else:
        signature = key.sign(to_sign, hash_algorithm)
        sig_alg = f"{digest}_dsa"
    asn1_cert = asn1_x509.Certificate.load((named or cert).public_bytes(serialization.Encoding.DER))
    signer = asn1_cms.SignerInfo(
        {
            "version": "v1",
            "sid": asn1_cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value=asn1_cms.IssuerAndSerialNumber(
                    {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
                ),
            ),
            "digest_algorithm": {"algorithm": digest},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": sig_alg},
            "signature": signature,
        }
    )
    parts = {
        "version": asn1_core.Integer(1).dump(),
        "digests": asn1_cms.DigestAlgorithms([{"algorithm": digest}]).dump(),
        "signers": asn1_cms.SignerInfos([signer]).dump(),
    }
    econtent = None if detached else inside
    if not ber:
        signed = asn1_cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [{"algorithm": digest}],
                "encap_content_info": {"content_type": "data", "content": econtent},
                "signer_infos": [signer],
            }
        )
        return asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return _ber_content_info(parts, econtent)


def _indefinite(tag: int, *parts: bytes) -> bytes:
    return bytes([tag, 0x80]) + b"".join(parts) + b"\x00\x00"


def _ber_content_info(parts: dict[str, bytes], econtent: bytes | None) -> bytes:
    """AWS's shape: indefinite lengths throughout, the content as a constructed OCTET STRING
    of chunks."""
    data_oid = asn1_core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
    encap = [data_oid]
    if econtent is not None:
        chunks = [econtent[i : i + 100] for i in range(0, len(econtent), 100)] or [b""]
        octets = _indefinite(0x24, *(asn1_core.OctetString(c).dump() for c in chunks))
        encap.append(_indefinite(0xA0, octets))
    signed = _indefinite(
        0x30, parts["version"], parts["digests"], _indefinite(0x30, *encap), parts["signers"]
    )
    signed_oid = asn1_core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
    return _indefinite(0x30, signed_oid, _indefinite(0xA0, signed))
