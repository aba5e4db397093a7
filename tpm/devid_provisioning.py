"""Provisioning a DevID key: generated in the TPM under the SRK, and a CSR signed there.

``tpm_devid`` needs a TPM-resident signing key (fixedTPM, fixedParent, sensitiveDataOrigin,
sign, not restricted, not decrypt) whose certificate comes from the operator's DevID CA. The
CSR is signed inside the TPM by the new key itself, through its own scheme (ECDSA or RSASSA
with SHA-256), so the CA sees proof of possession; nothing private leaves the TPM (the
TPM2B_PRIVATE blob is wrapped by this TPM's SRK and useless elsewhere).
"""

from __future__ import annotations

import hashlib
from typing import NoReturn, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from plastron.errors import KeyManagerError
from plastron.tpm.blobs import KeyBlob
from plastron.tpm.device import DEVID_TEMPLATES, TpmDevice
from plastron.tpm.structures import parse_signature, parse_tpm2b_public

Buffer = bytes | bytearray | memoryview


def _sha256_only(algorithm: object) -> None:
    # The DevID template fixes the scheme's hash (ecdsa-sha256 / rsassa-sha256): the TPM
    # signs nothing else with this key.
    if not isinstance(algorithm, hashes.SHA256):
        name = getattr(algorithm, "name", type(algorithm).__name__)
        raise KeyManagerError(f"tpm: the DevID key signs SHA-256 only, not {name}")


class _DevidKey:
    """Signs with the DevID key in the TPM; the CSR builder is its only user."""

    def __init__(self, device: TpmDevice, blob: KeyBlob) -> None:
        self._device, self._blob = device, blob

    def _tpm_sign(self, data: bytes) -> tuple[bytes, bytes, bytes]:
        """(rsa signature, ecdsa r, ecdsa s) of SHA-256(data); the unused ones empty."""
        digest = hashlib.sha256(data).digest()
        sig = parse_signature(self._device.sign_digest(self._blob, digest))
        return sig.rsa_sig, sig.ecc_r, sig.ecc_s

    def private_numbers(self) -> NoReturn:
        raise KeyManagerError("tpm: TPM keys cannot be exported")

    def private_bytes(self, *args: object, **kwargs: object) -> NoReturn:
        raise KeyManagerError("tpm: TPM keys cannot be exported")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class _DevidEcKey(_DevidKey, ec.EllipticCurvePrivateKey):
    def __init__(self, device: TpmDevice, blob: KeyBlob, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(device, blob)
        self._public = public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyManagerError("tpm: the DevID key signs ECDSA only")
        _sha256_only(signature_algorithm.algorithm)
        _, r, s = self._tpm_sign(bytes(data))
        return utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise KeyManagerError("tpm: the DevID key signs only")


class _DevidRsaKey(_DevidKey, rsa.RSAPrivateKey):
    def __init__(self, device: TpmDevice, blob: KeyBlob, public: rsa.RSAPublicKey) -> None:
        super().__init__(device, blob)
        self._public = public

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if not isinstance(padding, _PKCS1v15):
            raise KeyManagerError("tpm: the DevID key signs RSASSA-PKCS1-v1_5 only")
        _sha256_only(algorithm)
        signature, _, _ = self._tpm_sign(bytes(data))
        return signature

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise KeyManagerError("tpm: the DevID key signs only")


_PKCS1v15 = padding.PKCS1v15


def create_devid_with_csr(
    tcti: str, key_type: str, subject: x509.Name
) -> tuple[KeyBlob, x509.CertificateSigningRequest, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]:
    """Generate a DevID key of ``key_type`` (``ecc-p256`` or ``rsa-2048``) in the TPM and a CSR
    for ``subject`` signed by it there; also the key's public half."""
    if key_type not in DEVID_TEMPLATES:
        known = ", ".join(DEVID_TEMPLATES)
        raise KeyManagerError(f"tpm: unknown DevID key type {key_type!r}; expected {known}")
    device = TpmDevice(tcti)
    blob = device.create_devid(key_type)
    public = parse_tpm2b_public(blob.public).public_key()
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if isinstance(public, ec.EllipticCurvePublicKey):
        key = _DevidEcKey(device, blob, public)
    elif isinstance(public, rsa.RSAPublicKey):
        key = _DevidRsaKey(device, blob, public)
    else:  # pragma: no cover - the templates make only these two
        raise KeyManagerError(f"tpm: unexpected DevID public key {type(public).__name__}")
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return blob, csr, public
