"""Which certificate chains a tainted authority signed.

An operator taints an X.509 authority of the bundle when its key must be retired early (SPIRE's
LocalAuthority API). Whoever holds an X509-SVID chained to it (agents for their workloads and
themselves, the server for its own SVID) re-issues that SVID at once, before the authority is
revoked and the SVID stops verifying.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from plastron.spiffe.bundle import Bundle


def tainted_authorities(bundle: Bundle | None) -> tuple[x509.Certificate, ...]:
    if bundle is None:
        return ()
    return tuple(a.certificate for a in bundle.x509_authorities if a.tainted)


def chained_to(chain: Sequence[x509.Certificate], authorities: Sequence[x509.Certificate]) -> bool:
    """True when a certificate of ``chain`` is one of ``authorities`` or was signed by one."""
    for authority in authorities:
        for cert in chain:
            if cert == authority or _issued_by(cert, authority):
                return True
    return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False  # cheap tests first: most pairs differ by name or key identifier
    akid, skid = (
        _key_identifier(cert, x509.AuthorityKeyIdentifier),
        _key_identifier(issuer, x509.SubjectKeyIdentifier),
    )
    if akid is not None and skid is not None and akid != skid:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_identifier(
    cert: x509.Certificate,
    kind: type[x509.AuthorityKeyIdentifier] | type[x509.SubjectKeyIdentifier],
) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return value.digest


def jwt_key_id(token: str) -> str:
    """The ``kid`` of a JWT's header ("" when it cannot be read: such a token is not ours)."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "=="))
    except (ValueError, TypeError):
        return ""
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else ""
