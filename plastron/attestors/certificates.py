"""X.509 certificates that arrive in attestation payloads, parsed completely up front (every
lazily decoded part read at once, see ``x509svid.load_der_certificate``) and refused with the
attestation method's own error."""

from __future__ import annotations

from collections.abc import Callable

from cryptography import x509

from plastron.errors import InvalidSvid
from plastron.spiffe.x509svid import load_der_certificate


def load_untrusted_der(
    der: bytes, what: str, error: Callable[[str], Exception]
) -> x509.Certificate:
    """The certificate in ``der``, or ``error(message)`` naming ``what`` and the parse failure."""
    try:
        return load_der_certificate(der, what)
    except InvalidSvid as exc:
        raise error(str(exc)) from None
