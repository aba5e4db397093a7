"""Certificate signing requests as the API receives them: bounded, parsed, signature checked."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import InvalidArgument, PlastronError
from plastron.keymanager import PublicKey
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509svid import CERTIFICATE_PARSE_ERRORS

MAX_CSR_BYTES = 16 * 1024
MIN_RSA_BITS = 2048

CsrItem = tuple[bytes, str]  # (CSR DER, its field name for error messages, e.g. "params[3].csr")
CheckedKey = PublicKey | PlastronError  # the CSR's key, or why it is refused


def parse_csr(data: bytes, field: str = "csr") -> x509.CertificateSigningRequest:
    if not data:
        raise InvalidArgument(f"{field}: missing CSR")
    if len(data) > MAX_CSR_BYTES:
        raise InvalidArgument(f"{field}: CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_der_x509_csr(data)
    except CERTIFICATE_PARSE_ERRORS:
        raise InvalidArgument(f"{field}: malformed CSR (not DER PKCS#10)") from None
    try:
        # cryptography decodes lazily: read every part now, so no later access can raise (a
        # point off its curve or an unknown algorithm surfaces only in the signature check)
        _ = (csr.subject, csr.extensions, csr.signature_hash_algorithm)
        signature_valid = csr.is_signature_valid
    except CERTIFICATE_PARSE_ERRORS as exc:
        raise InvalidArgument(f"{field}: malformed CSR ({exc})") from None
    if not signature_valid:
        raise InvalidArgument(f"{field}: CSR signature is invalid")
    return csr


def csr_public_key(csr: x509.CertificateSigningRequest, field: str = "csr") -> PublicKey:
    """The CSR's key, which must be EC P-256/P-384 or RSA ≥ 2048 bits."""
    try:
        key = csr.public_key()
    except CERTIFICATE_PARSE_ERRORS:
        raise InvalidArgument(f"{field}: unsupported public key") from None
    return check_public_key(key, field)


def check_public_key(key: object, field: str = "csr") -> PublicKey:
    """``key`` if it is one we certify: EC P-256/P-384/P-521 or RSA ≥ 2048 bits."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise InvalidArgument(f"{field}: unsupported EC curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidArgument(
                f"{field}: RSA key of {key.key_size} bits is below {MIN_RSA_BITS}"
            )
        return key
    raise InvalidArgument(f"{field}: only EC and RSA public keys are supported")


def check_csrs(items: Sequence[CsrItem]) -> list[CheckedKey]:
    """Each CSR's checked public key, or its refusal in its place."""
    out: list[CheckedKey] = []
    for der, field in items:
        try:
            out.append(csr_public_key(parse_csr(der, field), field))
        except PlastronError as exc:
            out.append(exc)
    return out


def csr_uri_and_dns(
    csr: x509.CertificateSigningRequest, field: str = "csr"
) -> tuple[SpiffeId, list[str]]:
    """For MintX509SVID: exactly one URI SAN (the SPIFFE ID) and any DNS SANs."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidArgument(f"{field}: CSR has no URI SAN; exactly one is required") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidArgument(f"{field}: CSR must have exactly one URI SAN, found {len(uris)}")
    try:
        sid = SpiffeId.parse(uris[0])
    except PlastronError as exc:
        raise InvalidArgument(f"{field}: URI SAN is not a valid SPIFFE ID: {exc}") from None
    return sid, list(san.get_values_for_type(x509.DNSName))
