"""Public keys on the wire: SubjectPublicKeyInfo DER, the one encoding every message uses."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from plastron.errors import InvalidArgument

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_der(key: PublicKeyTypes) -> bytes:
    """``key`` as SubjectPublicKeyInfo DER (what bundles, journals and key pinning compare)."""
    return key.public_bytes(*_SPKI)


def public_key_from_der(
    der: bytes, field: str = "public_key"
) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """An EC or RSA key from SubjectPublicKeyInfo DER; InvalidArgument naming ``field``."""
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise InvalidArgument(f"{field}: not a DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidArgument(f"{field}: only EC and RSA keys are supported")
    return key
