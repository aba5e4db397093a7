"""X.509 certificates from untrusted bytes, bounded (DER chains, PEM files), and the SPIFFE ID
a certificate's URI SAN carries.

Spec: spiffe/spiffe standards/X509-SVID.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from plastron.errors import InvalidSpiffeId, InvalidSvid
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.leaf_der import der_header

MAX_CHAIN_CERTS = 16
MAX_CERT_DER_BYTES = 64 * 1024


def describe_certificate(cert: x509.Certificate) -> str:
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError:
        subject = "<unparsable>"
    return f"subject={subject!r} serial={cert.serial_number:x}"


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in the certificate's single URI SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidSvid(
            f"certificate has no subjectAltName extension ({describe_certificate(cert)})"
        ) from None
    except ValueError as exc:
        raise InvalidSvid(
            f"certificate extensions cannot be parsed ({describe_certificate(cert)})"
        ) from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidSvid(
            f"certificate must carry exactly one URI SAN, found {len(uris)} "
            f"({describe_certificate(cert)})"
        )
    try:
        return SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise InvalidSvid(f"certificate URI SAN is not a valid SPIFFE ID: {exc}") from exc


def _der_length(data: bytes, offset: int) -> int:
    """Total length (header + body) of the DER SEQUENCE starting at ``offset``."""
    if len(data) - offset < 2 or data[offset] != 0x30:
        raise InvalidSvid(f"DER certificate chain: expected a SEQUENCE at byte {offset}")
    _, start, size = der_header(data, offset, "DER certificate chain")
    return start - offset + size


# What cryptography raises for a certificate or CSR it cannot decode; most of it only when a
# field is first read (InvalidVersion and UnsupportedAlgorithm are not ValueErrors; a name
# attribute of the wrong ASN.1 type is a TypeError).
CERTIFICATE_PARSE_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    """One DER certificate from untrusted bytes, every lazily decoded field read now (so no
    later access can raise); InvalidSvid naming ``what`` if it cannot be decoded."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.extensions, cert.subject, cert.issuer, cert.serial_number)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_hash_algorithm)
        cert.public_key()
    except CERTIFICATE_PARSE_ERRORS as exc:
        raise InvalidSvid(f"{what} cannot be parsed: {exc}") from None
    return cert


def parse_der_chain(data: bytes, *, max_certs: int = MAX_CHAIN_CERTS) -> list[x509.Certificate]:
    """Split concatenated DER certificates (leaf first); bounded in count and size."""
    if not data:
        raise InvalidSvid("DER certificate chain is empty")
    if len(data) > max_certs * MAX_CERT_DER_BYTES:
        raise InvalidSvid(f"DER certificate chain is {len(data)} bytes; too large")
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if len(certs) == max_certs:
            raise InvalidSvid(f"DER certificate chain holds more than {max_certs} certificates")
        size = _der_length(data, offset)
        if size > MAX_CERT_DER_BYTES:
            raise InvalidSvid(f"DER certificate at byte {offset} is {size} bytes; too large")
        if offset + size > len(data):
            raise InvalidSvid(f"DER certificate chain is truncated at byte {offset}")
        certs.append(
            load_der_certificate(data[offset : offset + size], f"DER certificate at byte {offset}")
        )
        offset += size
    return certs


def certificates_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_pem_certificates(
    data: bytes, *, max_certs: int = MAX_CHAIN_CERTS
) -> list[x509.Certificate]:
    """Every certificate in a PEM file; InvalidSvid if there are none or too many."""
    if len(data) > max_certs * MAX_CERT_DER_BYTES * 2:
        raise InvalidSvid(f"PEM data is {len(data)} bytes; too large")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidSvid(f"PEM data holds no parsable certificate: {exc}") from exc
    if len(certs) > max_certs:
        raise InvalidSvid(f"PEM data holds {len(certs)} certificates; limit {max_certs}")
    return certs
