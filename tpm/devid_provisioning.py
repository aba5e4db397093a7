"""Provisioning a DevID key: generated in the TPM under the SRK, and a CSR signed there.

``tpm_devid`` needs a TPM-resident signing key (fixedTPM, fixedParent, sensitiveDataOrigin,
sign, not restricted, not decrypt) whose certificate comes from the operator's DevID CA. The
CSR is signed inside the TPM by the new key itself (its template fixes ECDSA or RSASSA with
SHA-256), so the CA sees proof of possession; nothing private leaves the TPM (the
TPM2B_PRIVATE blob is wrapped by this TPM's SRK and useless elsewhere). The key is driven
through the KeyManager's TPM key classes, loaded from the DevID blob instead of a TSS file.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR

from plastron.errors import KeyManagerError
from plastron.tpm.blobs import KeyBlob
from plastron.tpm.device import DEVID_TEMPLATES, TpmDevice
from plastron.tpm.keymanager import TpmEcPrivateKey, TpmRsaPrivateKey
from plastron.tpm.structures import parse_tpm2b_public


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

    def load(ctx: ESAPI) -> ESYS_TR:
        return device.load_devid(ctx, blob)

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if isinstance(public, ec.EllipticCurvePublicKey):
        key = TpmEcPrivateKey(device, "devid", load, public)
    elif isinstance(public, rsa.RSAPublicKey):
        key = TpmRsaPrivateKey(device, "devid", load, public)
    else:  # pragma: no cover - the templates make only these two
        raise KeyManagerError(f"tpm: unexpected DevID public key {type(public).__name__}")
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return blob, csr, public
