"""X.509 certificates that arrive in attestation payloads, parsed completely up front.

``cryptography`` decodes parts of a certificate lazily (extensions, names, the public key) and
raises on first access, with exception types that are not all ValueError. Parsing an untrusted
certificate therefore touches every part at once and turns every such failure into the
method's own error, so no later check can trip over a malformed field.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# What cryptography raises for certificates it cannot decode (some only on first access).
CERT_PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def load_untrusted_der(
    der: bytes, what: str, error: Callable[[str], Exception]
) -> x509.Certificate:
    """The certificate in ``der`` with every lazily decoded part decoded, or ``error(message)``
    naming ``what`` and the parse failure."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.extensions, cert.subject, cert.issuer, cert.serial_number)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
    except CERT_PARSE_ERRORS as exc:
        raise error(f"unable to parse {what}: {exc}") from None
    return cert
