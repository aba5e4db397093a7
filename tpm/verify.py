"""Server-side TPM checks in pure ``cryptography`` (no TPM here). Each check is one function
whose failure message says what was wrong; the attestors compose them.

Model: go-attestation's activation.go / certification.go, plus the two checks SPIRE's tpm_devid
misses (AK attributes; DevID certificate key == certified key).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from plastron.errors import AttestationFailed, ConfigError
from plastron.tpm import structures as st
from plastron.wire.keys import spki_der

TCG_KP_EK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.1")
TPM_MANUFACTURER = x509.ObjectIdentifier("2.23.133.2.1")
TPM_MODEL = x509.ObjectIdentifier("2.23.133.2.2")
TPM_VERSION = x509.ObjectIdentifier("2.23.133.2.3")
MAX_CA_FILES = 1000
MAX_CA_FILE_BYTES = 1 << 20
MAX_CHAIN_DEPTH = 6

_POLICY_LOW = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_POLICY_SHA256 = bytes.fromhex("ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0")
_POLICY_SHA384 = bytes.fromhex(
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12"
)
_EK_BASE = st.FIXED_TPM | st.FIXED_PARENT | st.SENSITIVE_DATA_ORIGIN | st.ADMIN_WITH_POLICY
_EK_LOW_ATTRS = _EK_BASE | st.RESTRICTED | st.DECRYPT
_EK_HIGH_ATTRS = _EK_LOW_ATTRS | st.USER_WITH_AUTH


@dataclass(frozen=True)
class EkTemplate:
    """The fields of a TCG EK Credential Profile template that a real EK must reproduce."""

    name: str
    type: int
    name_alg: int
    attributes: int
    policy: bytes
    sym_bits: int
    size: int  # RSA key bits, or ECC curve id


EK_TEMPLATES = (
    EkTemplate("L-1", st.ALG_RSA, st.ALG_SHA256, _EK_LOW_ATTRS, _POLICY_LOW, 128, 2048),
    EkTemplate("L-2", st.ALG_ECC, st.ALG_SHA256, _EK_LOW_ATTRS, _POLICY_LOW, 128, st.ECC_NIST_P256),
    EkTemplate("H-1", st.ALG_RSA, st.ALG_SHA256, _EK_HIGH_ATTRS, _POLICY_SHA256, 128, 2048),
    EkTemplate(
        "H-2", st.ALG_ECC, st.ALG_SHA256, _EK_HIGH_ATTRS, _POLICY_SHA256, 128, st.ECC_NIST_P256
    ),
    EkTemplate(
        "H-3", st.ALG_ECC, st.ALG_SHA384, _EK_HIGH_ATTRS, _POLICY_SHA384, 256, st.ECC_NIST_P384
    ),
    EkTemplate("H-6", st.ALG_RSA, st.ALG_SHA384, _EK_HIGH_ATTRS, _POLICY_SHA384, 256, 3072),
    EkTemplate("H-7", st.ALG_RSA, st.ALG_SHA384, _EK_HIGH_ATTRS, _POLICY_SHA384, 256, 4096),
)

# ---- keys and certificates -------------------------------------------------------------------


def spki_sha256(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER (the EK identity used in IDs and allow-lists)."""
    return hashlib.sha256(spki_der(key)).hexdigest()


def cert_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_certificates(path: str | Path, key: str) -> list[x509.Certificate]:
    """CA certificates from a PEM file, or every .pem/.crt/.cer/.der file in a directory."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    if not p.exists():
        raise ConfigError(f"{key}: {path} does not exist")
    if len(files) > MAX_CA_FILES:
        raise ConfigError(f"{key}: {path} holds more than {MAX_CA_FILES} files")
    certs: list[x509.Certificate] = []
    for f in files:
        data = f.read_bytes()
        if len(data) > MAX_CA_FILE_BYTES:
            raise ConfigError(f"{key}: {f} is larger than {MAX_CA_FILE_BYTES} bytes")
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                certs.extend(x509.load_pem_x509_certificates(data))
            elif f.suffix.lower() in (".der", ".cer", ".crt"):
                certs.append(x509.load_der_x509_certificate(data))
        except ValueError as exc:
            raise ConfigError(f"{key}: {f} is not a certificate ({exc})") from None
    if not certs:
        raise ConfigError(f"{key}: no certificates found in {path}")
    return certs


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
    what: str,
) -> list[x509.Certificate]:
    """The chain leaf → a trusted CA. The leaf policy is permissive (EK certificates carry the
    TCG EKU and a critical dirName SAN that Web PKI rules refuse); CA certificates get the Web
    PKI CA checks (basicConstraints cA, keyCertSign, validity)."""
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except (VerificationError, ValueError) as exc:
        raise AttestationFailed(
            f"tpm: {what} does not chain to a trusted CA "
            f"(issuer={leaf.issuer.rfc4514_string()!r}: {exc})"
        ) from None


def verify_ek_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """The EK certificate chains to a manufacturer CA and, if it has an EKU, it is the TCG one."""
    chain = verify_chain(leaf, intermediates, roots, now, "EK certificate (manufacturer CA)")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if TCG_KP_EK_CERTIFICATE not in eku:
            raise AttestationFailed(
                "tpm: EK certificate has an extendedKeyUsage without tcg-kp-EKCertificate"
            )
    except x509.ExtensionNotFound:
        pass
    return chain


def ek_cert_identity(cert: x509.Certificate) -> dict[str, str]:
    """TPM manufacturer/model/firmware from the EK certificate's directoryName SAN, if present."""
    out: dict[str, str] = {}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return out
    wanted = {TPM_MANUFACTURER: "manufacturer", TPM_MODEL: "model", TPM_VERSION: "firmware"}
    for name in san.get_values_for_type(x509.DirectoryName):
        for attr in name:
            field = wanted.get(attr.oid)
            if field and isinstance(attr.value, str) and 0 < len(attr.value) <= 128:
                out[field] = attr.value
    return out


def check_ek_template(ek: st.TpmPublic) -> EkTemplate:
    """The EK must be a restricted decryption key made from a TCG EK template."""
    size = ek.rsa_bits if ek.type == st.ALG_RSA else ek.curve
    for t in EK_TEMPLATES:
        if (
            ek.type == t.type
            and ek.name_alg == t.name_alg
            and ek.attributes == t.attributes
            and ek.auth_policy == t.policy
            and (ek.sym_alg, ek.sym_bits, ek.sym_mode) == (st.ALG_AES, t.sym_bits, st.ALG_CFB)
            and ek.scheme.alg == st.ALG_NULL
            and ek.kdf.alg == st.ALG_NULL
            and size == t.size
            and ek.rsa_exponent in (0, 65537)
        ):
            return t
    raise AttestationFailed(
        f"tpm: EK public area matches no TCG EK template (type=0x{ek.type:04x}, "
        f"attributes=0x{ek.attributes:08x}, nameAlg=0x{ek.name_alg:04x})"
    )


def check_ek_matches_cert(ek: st.TpmPublic, cert: x509.Certificate) -> None:
    """The EK public the agent sent must be the key its certificate certifies."""
    if spki_sha256(ek.public_key()) != spki_sha256(cert.public_key()):  # type: ignore[arg-type]
        raise AttestationFailed(
            "tpm: EK public key does not match the EK certificate's public key "
            f"(ek={spki_sha256(ek.public_key())[:16]}…)"
        )


_AK_REQUIRED = (
    st.FIXED_TPM | st.FIXED_PARENT | st.SENSITIVE_DATA_ORIGIN | st.RESTRICTED | st.SIGN_ENCRYPT
)
_AK_NAMES = {
    st.FIXED_TPM: "fixedTPM",
    st.FIXED_PARENT: "fixedParent",
    st.SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    st.RESTRICTED: "restricted",
    st.SIGN_ENCRYPT: "sign",
}


def _missing(attrs: int, required: int) -> list[str]:
    return [name for bit, name in _AK_NAMES.items() if required & bit and not attrs & bit]


def check_ak(ak: st.TpmPublic) -> None:
    """An AK is a TPM-resident (fixedTPM, fixedParent, sensitiveDataOrigin) restricted signing
    key that cannot decrypt: only then does a quote or certify prove the TPM made it."""
    missing = _missing(ak.attributes, _AK_REQUIRED)
    if missing:
        raise AttestationFailed(f"tpm: AK lacks required attributes {', '.join(missing)}")
    if ak.attributes & st.DECRYPT:
        raise AttestationFailed("tpm: AK has the decrypt attribute; an AK must only sign")
    _check_signing_key_strength(ak, "AK")


def check_devid_key(key: st.TpmPublic) -> None:
    """A DevID key is TPM-resident and signs, and is not restricted (it signs arbitrary data)."""
    required = st.FIXED_TPM | st.FIXED_PARENT | st.SENSITIVE_DATA_ORIGIN | st.SIGN_ENCRYPT
    missing = _missing(key.attributes, required)
    if missing:
        raise AttestationFailed(f"tpm: DevID key lacks required attributes {', '.join(missing)}")
    if key.attributes & st.DECRYPT:
        raise AttestationFailed("tpm: DevID key has the decrypt attribute")
    _check_signing_key_strength(key, "DevID key")


def _check_signing_key_strength(key: st.TpmPublic, what: str) -> None:
    if key.type == st.ALG_RSA and key.rsa_bits < 2048:
        raise AttestationFailed(f"tpm: {what} is RSA-{key.rsa_bits}; at least 2048 bits needed")
    if key.type == st.ALG_ECC and key.curve not in (st.ECC_NIST_P256, st.ECC_NIST_P384):
        raise AttestationFailed(f"tpm: {what} curve 0x{key.curve:04x} is not P-256 or P-384")


# ---- signatures, quotes, certify ------------------------------------------------------------

_SIG_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    st.ALG_SHA256: hashes.SHA256,
    st.ALG_SHA384: hashes.SHA384,
    st.ALG_SHA512: hashes.SHA512,
}


def verify_signature(signer: st.TpmPublic, signature: bytes, data: bytes, what: str) -> None:
    """A TPMT_SIGNATURE by ``signer`` over ``data`` (the TPM hashed ``data`` itself)."""
    sig = st.parse_signature(signature)
    if sig.hash_alg not in _SIG_HASHES:
        raise AttestationFailed(f"tpm: {what} signature hash 0x{sig.hash_alg:04x} not allowed")
    if signer.scheme.alg not in (st.ALG_NULL, sig.alg):
        raise AttestationFailed(f"tpm: {what} signature scheme differs from the key's scheme")
    h = _SIG_HASHES[sig.hash_alg]()
    key = signer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and sig.alg == st.ALG_ECDSA:
            der = encode_dss_signature(
                int.from_bytes(sig.ecc_r, "big"), int.from_bytes(sig.ecc_s, "big")
            )
            key.verify(der, data, ec.ECDSA(h))
        elif isinstance(key, rsa.RSAPublicKey) and sig.alg == st.ALG_RSASSA:
            key.verify(sig.rsa_sig, data, padding.PKCS1v15(), h)
        elif isinstance(key, rsa.RSAPublicKey) and sig.alg == st.ALG_RSAPSS:
            pss = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
            key.verify(sig.rsa_sig, data, pss, h)
        else:
            raise AttestationFailed(f"tpm: {what} signature algorithm does not fit the key type")
    except InvalidSignature:
        raise AttestationFailed(f"tpm: {what} signature is not valid for the AK") from None


def pcr_digest(values: dict[int, bytes]) -> bytes:
    """SHA-256 over the PCR values in ascending index order (how TPM2_Quote builds pcrDigest)."""
    return hashlib.sha256(b"".join(values[i] for i in sorted(values))).digest()


def verify_quote(
    ak: st.TpmPublic,
    quote: bytes,
    signature: bytes,
    nonce: bytes,
    *,
    pcrs: dict[int, bytes],
    expected: Iterable[int],
) -> st.Attest:
    """A TPM2_Quote by the AK over exactly the ``expected`` sha256 PCRs, qualified with ``nonce``,
    whose digest equals the hash of the reported ``pcrs`` values."""
    attest, signed = st.parse_tpm2b_attest(quote)
    verify_signature(ak, signature, signed, "quote")
    if attest.magic != st.TPM_GENERATED_VALUE:
        raise AttestationFailed("tpm: quote was not generated by a TPM (magic mismatch)")
    if attest.type != st.ST_ATTEST_QUOTE:
        raise AttestationFailed(f"tpm: attestation type 0x{attest.type:04x} is not a quote")
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise AttestationFailed("tpm: quote nonce does not match this attestation's nonce")
    want = sorted(set(expected))
    if attest.pcr_select != (st.PcrSelection(st.ALG_SHA256, tuple(want)),):
        raise AttestationFailed(f"tpm: quote does not cover exactly sha256 PCRs {want}")
    if sorted(pcrs) != want or any(len(v) != 32 for v in pcrs.values()):
        raise AttestationFailed(f"tpm: reported PCR values are not the sha256 PCRs {want}")
    if not hmac.compare_digest(pcr_digest(pcrs), attest.pcr_digest):
        raise AttestationFailed("tpm: reported PCR values do not match the quoted PCR digest")
    return attest


def verify_certify(
    ak: st.TpmPublic, certify_info: bytes, signature: bytes, key: st.TpmPublic, nonce: bytes
) -> None:
    """TPM2_Certify by the AK names ``key``: the AK vouches that ``key`` lives in the same TPM.
    ``certify_info`` is a TPMS_ATTEST (SPIRE sends it without the TPM2B size)."""
    attest = st.parse_attest(certify_info)
    verify_signature(ak, signature, certify_info, "certify")
    if attest.magic != st.TPM_GENERATED_VALUE:
        raise AttestationFailed("tpm: certify info was not generated by a TPM (magic mismatch)")
    if attest.type != st.ST_ATTEST_CERTIFY:
        raise AttestationFailed(f"tpm: attestation type 0x{attest.type:04x} is not certify")
    if not hmac.compare_digest(attest.certified_name, key.name):
        raise AttestationFailed("tpm: certify names a different key than the DevID public key")
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise AttestationFailed("tpm: certify qualifying data does not match")
