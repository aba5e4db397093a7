"""A throwaway SPIFFE PKI for the transport tests: CAs and SVIDs with URI SANs only."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.pki import CA_KEY_USAGE, self_signed

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Svid:
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


@dataclass
class PkiCa:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    trust_domain: str

    def svid(self, path: str, *, uri: str | None = None, extra_uri: str | None = None) -> Svid:
        key = ec.generate_private_key(ec.SECP256R1())
        uris = [x509.UniformResourceIdentifier(uri or f"spiffe://{self.trust_domain}{path}")]
        if extra_uri:
            uris.append(x509.UniformResourceIdentifier(extra_uri))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=1))
            .not_valid_after(NOW + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(uris), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, True, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Svid([cert], key)


def make_ca(trust_domain: str = "example.org") -> PkiCa:
    ca = self_signed(
        f"CA {trust_domain}",
        start=NOW,
        lifetime=datetime.timedelta(days=1),
        ca=True,
        key_usage=CA_KEY_USAGE,
        sans=[x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")],
        subject_key_id=True,
    )
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    return PkiCa(ca.cert, ca.key, trust_domain)
