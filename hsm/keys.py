"""HSM-held keys as ``cryptography`` private-key objects.

pyca/cryptography calls a subclass's Python ``sign()`` from ``CertificateBuilder.sign``, CSR
and CRL builders, and PyJWT does the same, so these objects let the CA sign certificates and
JWTs with a key that never leaves the token. The digest is always computed here (SoftHSM2 has
only raw ``CKM_ECDSA``; raw ``CKM_RSA_PKCS`` takes a DigestInfo) so one mechanism per key
family works on every conformant module. Nothing private can be exported from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    encode_dss_signature,
)
from cryptography.utils import Buffer
from pkcs11 import MGF, Mechanism

from plastron.errors import KeyManagerError
from plastron.signing_digest import signing_digest

#: Runs one C_Sign with the named key: (mechanism, data, mechanism parameter) -> signature.
SignFunction = Callable[[Mechanism, bytes, Any], bytes]

_DIGEST_INFO_PREFIX = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_PARAMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}


def _no_export(label: str) -> NoReturn:
    raise KeyManagerError(f"pkcs11: key {label!r} is held in the HSM and cannot be exported")


class _HeldInToken:
    """What both key kinds answer alike: the private half cannot leave the token (no
    serialisation, no pickling), and a copy is the same handle."""

    _label: str

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _no_export(self._label)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    def __reduce__(self) -> NoReturn:
        _no_export(self._label)


class HsmEllipticCurvePrivateKey(_HeldInToken, ec.EllipticCurvePrivateKey):
    """An EC key in the token; ``sign`` returns DER, :meth:`sign_raw` returns JWS r||s."""

    blocking = True

    def __init__(self, label: str, public: ec.EllipticCurvePublicKey, sign: SignFunction) -> None:
        self._label = label
        self._public = public
        self._sign_fn = sign

    def __repr__(self) -> str:
        return f"<HsmEllipticCurvePrivateKey label={self._label!r} curve={self._public.curve.name}>"

    @property
    def label(self) -> str:
        return self._label

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign_raw(self, data: Buffer, algorithm: hashes.HashAlgorithm | Prehashed) -> bytes:
        """Fixed-width r||s (the JWS form) over ``data``."""
        digest, _ = signing_digest(data, algorithm, who="pkcs11")
        raw = self._sign_fn(Mechanism.ECDSA, digest, None)
        if len(raw) != 2 * ((self.key_size + 7) // 8):
            raise KeyManagerError(
                f"pkcs11: token returned a {len(raw)}-byte ECDSA signature for {self._label!r}"
            )
        return raw

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyManagerError(f"pkcs11: {self._label!r} signs with ECDSA only")
        raw = self.sign_raw(data, signature_algorithm.algorithm)
        half = len(raw) // 2
        r = int.from_bytes(raw[:half], "big")
        s = int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise KeyManagerError(f"pkcs11: key {self._label!r} is a signing key; ECDH is disabled")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _no_export(self._label)


class HsmRsaPrivateKey(_HeldInToken, rsa.RSAPrivateKey):
    """An RSA key in the token: PKCS#1 v1.5 and PSS (MGF1 with the same hash)."""

    blocking = True

    def __init__(self, label: str, public: rsa.RSAPublicKey, sign: SignFunction) -> None:
        self._label = label
        self._public = public
        self._sign_fn = sign

    def __repr__(self) -> str:
        return f"<HsmRsaPrivateKey label={self._label!r} bits={self._public.key_size}>"

    @property
    def label(self) -> str:
        return self._label

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def _pss_salt(self, pad: rsa_padding.PSS, digest_size: int) -> int:
        salt = pad._salt_length
        if isinstance(salt, int):
            return salt
        if salt is rsa_padding.PSS.DIGEST_LENGTH:
            return digest_size
        if salt is rsa_padding.PSS.MAX_LENGTH:
            return (self.key_size + 7) // 8 - digest_size - 2
        raise KeyManagerError("pkcs11: PSS.AUTO is for verification only")

    def sign(
        self,
        data: bytes,
        padding: rsa_padding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo,
    ) -> bytes:
        digest, hash_algorithm = signing_digest(data, algorithm, who="pkcs11")
        name = hash_algorithm.name
        if isinstance(padding, rsa_padding.PKCS1v15):
            return self._sign_fn(Mechanism.RSA_PKCS, _DIGEST_INFO_PREFIX[name] + digest, None)
        if isinstance(padding, rsa_padding.PSS):
            mgf = padding.mgf
            if not isinstance(mgf, rsa_padding.MGF1) or mgf._algorithm.name != name:
                raise KeyManagerError("pkcs11: PSS needs MGF1 with the signature's hash")
            hash_mech, mgf_id = _PSS_PARAMS[name]
            salt = self._pss_salt(padding, len(digest))
            return self._sign_fn(Mechanism.RSA_PKCS_PSS, digest, (hash_mech, mgf_id, salt))
        raise KeyManagerError(f"pkcs11: padding {padding.name!r} is not supported for signing")

    def decrypt(self, ciphertext: bytes, padding: rsa_padding.AsymmetricPadding) -> bytes:
        raise KeyManagerError(f"pkcs11: key {self._label!r} is a signing key; decryption is off")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _no_export(self._label)
