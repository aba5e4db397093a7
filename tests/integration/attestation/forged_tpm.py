"""TPM attestation payloads built in software: the structures a TPM would produce (EK and AK
public areas, a TPM2_Certify over a DevID key) with keys this process holds.

They pass every check the server can make before it challenges the agent, so a test can reach
the challenge-response parsing of ``tpm`` and ``tpm_devid`` without a TPM. (The activation
itself still needs the EK's private key inside a TPM, so no forged answer can succeed.)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from plastron.tpm import structures as st
from plastron.tpm import verify
from plastron.tpm.messages import Payload
from tests.unit.attestors.x509pop_pki import Issued, make_ca, make_leaf

NOW = dt.datetime.now(dt.UTC)
_EK_ATTRS = (
    st.FIXED_TPM
    | st.FIXED_PARENT
    | st.SENSITIVE_DATA_ORIGIN
    | st.ADMIN_WITH_POLICY
    | st.RESTRICTED
    | st.DECRYPT
)
_SIGNER_ATTRS = (
    st.FIXED_TPM | st.FIXED_PARENT | st.SENSITIVE_DATA_ORIGIN | st.USER_WITH_AUTH | st.SIGN_ENCRYPT
)
# TPM2_PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG low-range EK templates.
_EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")


def _ecc_public(key: ec.EllipticCurvePublicKey, attrs: int, *, ek: bool) -> bytes:
    """A P-256 TPMT_PUBLIC: the EK template L-2, or an ECDSA-SHA256 signing key."""
    nums = key.public_numbers()
    body = struct.pack(">HHI", st.ALG_ECC, st.ALG_SHA256, attrs)
    if ek:
        body += st.tpm2b(_EK_POLICY) + struct.pack(">HHH", st.ALG_AES, 128, st.ALG_CFB)
        body += struct.pack(">H", st.ALG_NULL)  # scheme
    else:
        body += st.tpm2b(b"") + struct.pack(">H", st.ALG_NULL)  # no symmetric
        body += struct.pack(">HH", st.ALG_ECDSA, st.ALG_SHA256)
    body += struct.pack(">HH", st.ECC_NIST_P256, st.ALG_NULL)  # curve, kdf
    return body + st.tpm2b(nums.x.to_bytes(32, "big")) + st.tpm2b(nums.y.to_bytes(32, "big"))


def _tpm_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    head = struct.pack(">HH", st.ALG_ECDSA, st.ALG_SHA256)
    return head + st.tpm2b(r.to_bytes(32, "big")) + st.tpm2b(s.to_bytes(32, "big"))


def _certify_info(certified_name: bytes) -> bytes:
    """A TPMS_ATTEST of type certify naming ``certified_name`` (no qualifying data)."""
    head = struct.pack(">IH", st.TPM_GENERATED_VALUE, st.ST_ATTEST_CERTIFY)
    clock = struct.pack(">QIIBQ", 1000, 1, 0, 1, 0x20240101)
    return head + st.tpm2b(b"") + st.tpm2b(b"") + clock + st.tpm2b(certified_name) + st.tpm2b(b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class ForgedTpm:
    """One software "TPM": an EK with a certificate from ``ek_ca``, an AK, and a DevID key with
    a certificate from ``devid_ca``."""

    ek_ca: Issued
    devid_ca: Issued
    ek: ec.EllipticCurvePrivateKey
    ak: ec.EllipticCurvePrivateKey
    devid: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> ForgedTpm:
        def fresh() -> ec.EllipticCurvePrivateKey:
            return ec.generate_private_key(ec.SECP256R1())

        valid = {"not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=30)}
        ek_ca = make_ca("Forged TPM Manufacturer", key=fresh(), **valid)
        devid_ca = make_ca("Forged DevID CA", key=fresh(), **valid)
        return cls(ek_ca, devid_ca, fresh(), fresh(), fresh())

    @property
    def ek_public(self) -> bytes:
        return _ecc_public(self.ek.public_key(), _EK_ATTRS, ek=True)

    @property
    def ak_public(self) -> bytes:
        return _ecc_public(self.ak.public_key(), _SIGNER_ATTRS | st.RESTRICTED, ek=False)

    @property
    def devid_public(self) -> bytes:
        return _ecc_public(self.devid.public_key(), _SIGNER_ATTRS, ek=False)

    @property
    def ek_hash(self) -> str:
        return verify.spki_sha256(self.ek.public_key())

    def ek_cert_der(self) -> bytes:
        valid = {"not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=30)}
        cert = make_leaf(self.ek_ca, cn=None, key=self.ek, digital_signature=False, **valid)
        return cert.der

    def write_trust(self, directory: Path) -> dict[str, Path]:
        """The files a server trusts this TPM by: EK CA, DevID CA, EK hash allow-list."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "ek_ca": directory / "ek-ca.pem",
            "devid_ca": directory / "devid-ca.pem",
            "ek_hashes": directory / "ek-hashes.txt",
        }
        paths["ek_ca"].write_bytes(self.ek_ca.pem())
        paths["devid_ca"].write_bytes(self.devid_ca.pem())
        paths["ek_hashes"].write_text(self.ek_hash + "\n")
        return paths

    def tpm_payload(self) -> bytes:
        """A ``tpm`` payload whose EK is on the hash allow-list (no EK certificate)."""
        return Payload(ek_pub=st.tpm2b(self.ek_public), ak_pub=st.tpm2b(self.ak_public)).to_bytes()

    def devid_payload(self) -> bytes:
        """A ``tpm_devid`` payload (SPIRE's field names) that passes every pre-challenge check."""
        valid = {"not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=30)}
        devid_cert = make_leaf(self.devid_ca, cn="forged-devid", key=self.devid, **valid)
        devid_name = st.parse_tpmt_public(self.devid_public).name
        info = _certify_info(devid_name)
        return json.dumps(
            {
                "DevIDCert": [_b64(devid_cert.der)],
                "DevIDPub": _b64(self.devid_public),
                "EKCert": _b64(self.ek_cert_der()),
                "EKPub": _b64(self.ek_public),
                "AKPub": _b64(self.ak_public),
                "CertifiedDevID": _b64(info),
                "CertificationSignature": _b64(_tpm_signature(self.ak, info)),
            }
        ).encode()


def with_unknown_key_algorithm(der: bytes) -> bytes:
    """``der`` (a P-256 certificate) with its key's algorithm OID changed to one no library
    knows: the certificate still parses, its public key does not."""
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # OID 1.2.840.10045.2.1
    assert der.count(ec_public_key) == 1
    return der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
