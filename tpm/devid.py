"""The ``tpm_devid`` attestation method, with SPIRE's payload and challenge formats.

Wire (JSON; Go ``[]byte`` fields are standard base64), as SPIRE's pkg/common/plugin/tpmdevid:
  payload   {"DevIDCert": [leaf, intermediates…], "DevIDPub": TPMT_PUBLIC, "EKCert": DER,
             "EKPub": TPMT_PUBLIC, "AKPub": TPMT_PUBLIC, "CertifiedDevID": TPMS_ATTEST,
             "CertificationSignature": TPMT_SIGNATURE}
  challenge {"DevID": 32-byte nonce, "CredActivation": {"Credential": ID_OBJECT without its
             size, "Secret": ENCRYPTED_SECRET without its size}}
  response  {"DevID": signature of the nonce (SHA-256; PKCS#1 v1.5 or DER ECDSA),
             "CredActivation": the activated nonce}
Agent ID ``spiffe://<td>/spire/agent/tpm_devid/<sha1 of DevID cert DER>``; selectors
``tpm_devid:subject:cn:…``, ``tpm_devid:issuer:cn:…``, ``tpm_devid:ca:fingerprint:<sha1>``.
Beyond SPIRE: the AK must be a restricted TPM-resident signing key, the DevID certificate's key
must be the certified DevID key, and the EK must match a TCG template (RSA or ECC EKs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.certificates import load_untrusted_der
from plastron.clock import Clock, SystemClock
from plastron.configs.block import Block
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext
from plastron.selector import Selector
from plastron.spiffe.ids import TrustDomain, agent_id
from plastron.tpm import verify
from plastron.tpm.blobs import KeyBlob
from plastron.tpm.credential import make_credential
from plastron.tpm.messages import MAX_CERT, MAX_CHAIN, MAX_TPM_BLOB, b64, b64field, dump
from plastron.tpm.messages import load_object as _load_object
from plastron.tpm.structures import TpmPublic, hash_name, parse_signature, parse_tpmt_public, tpm2b
from plastron.tpm.tcti import DEFAULT_TCTI, Tcti

NAME = "tpm_devid"
NONCE_SIZE = 32
DEFAULT_ANSWER_TIMEOUT = 30.0
_SHARED_PREFIX = "tpm: "
_PAYLOAD_KEYS = {
    "DevIDCert", "DevIDPub", "EKCert", "EKPub", "AKPub", "CertifiedDevID",
    "CertificationSignature",
}  # fmt: skip


@dataclass(frozen=True)
class TpmDevidServerConfig:
    devid_ca_path: str
    endorsement_ca_path: str

    @classmethod
    def from_settings(cls, settings: Block, context: PluginContext) -> TpmDevidServerConfig:
        """Relative file paths are taken from the config file's directory."""
        config = cls(
            devid_ca_path=_required_path(settings, "devid_ca_path", context),
            endorsement_ca_path=_required_path(settings, "endorsement_ca_path", context),
        )
        settings.finish()
        return config


def _required_path(settings: Block, key: str, context: PluginContext) -> str:
    value: str = settings.string(key)
    if not value:
        raise ConfigError(f"{settings.where(key)} must be a non-empty string")
    return str(context.resolve(value))


def _cert(der: bytes, what: str) -> x509.Certificate:
    return load_untrusted_der(der, what, lambda msg: AttestationFailed(f"tpm_devid: {msg}"))


@contextmanager
def _named_tpm_devid() -> Iterator[None]:
    """The checks shared with the ``tpm`` method (JSON framing, base64 fields, EK template, AK,
    certify) name that method in their refusals; a tpm_devid refusal names tpm_devid."""
    try:
        yield
    except AttestationFailed as err:
        message = str(err)
        if not message.startswith(_SHARED_PREFIX):
            raise
        raise AttestationFailed(f"{NAME}: {message.removeprefix(_SHARED_PREFIX)}") from None


def _cn(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) and value else None


def verify_nonce_signature(cert: x509.Certificate, nonce: bytes, signature: bytes) -> None:
    """The DevID key (as named by its certificate) signed SHA-256(nonce)."""
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, nonce, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        else:
            raise AttestationFailed("tpm_devid: DevID certificate key is not RSA or EC")
    except InvalidSignature:
        raise AttestationFailed("tpm_devid: DevID challenge signature is not valid") from None


@dataclass(frozen=True)
class _Checked:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    ek: TpmPublic
    ak: TpmPublic
    ak_pub: bytes


class TpmDevidServerAttestor:
    name = NAME

    def __init__(
        self,
        config: TpmDevidServerConfig,
        trust_domain: TrustDomain,
        clock: Clock | None = None,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
    ) -> None:
        self._td = trust_domain
        self._clock = clock or SystemClock()
        self._timeout = answer_timeout
        self._devid_roots = verify.load_certificates(config.devid_ca_path, "devid_ca_path")
        self._ek_roots = verify.load_certificates(config.endorsement_ca_path, "endorsement_ca_path")

    def _check_payload(self, payload: bytes) -> _Checked:
        """Every check that needs no answer from the agent (all before any challenge)."""
        obj = _load_object(payload, "payload", _PAYLOAD_KEYS, set())
        chain_b64 = obj["DevIDCert"]
        if not isinstance(chain_b64, list) or not 0 < len(chain_b64) <= MAX_CHAIN + 1:
            raise AttestationFailed("tpm_devid: DevIDCert must list the leaf and intermediates")
        chain = [_cert(b64field(c, "DevIDCert[]", MAX_CERT), "DevID cert") for c in chain_b64]
        field = {
            k: b64field(obj[k], k, MAX_TPM_BLOB) for k in _PAYLOAD_KEYS - {"DevIDCert", "EKCert"}
        }
        ek_cert = _cert(b64field(obj["EKCert"], "EKCert", MAX_CERT), "EK certificate")
        now = self._clock.now()
        verified = verify.verify_chain(chain[0], chain[1:], self._devid_roots, now, "DevID cert")
        # DevID residency: DevID key certified by the AK; the AK activated against the EK.
        devid_pub = parse_tpmt_public(field["DevIDPub"])
        verify.check_devid_key(devid_pub)
        if verify.spki_sha256(devid_pub.public_key()) != verify.spki_sha256(
            chain[0].public_key()  # type: ignore[arg-type]
        ):
            raise AttestationFailed(
                "tpm_devid: DevID certificate key is not the certified DevID key (DevIDPub)"
            )
        ek = parse_tpmt_public(field["EKPub"])
        verify.check_ek_template(ek)
        verify.check_ek_matches_cert(ek, ek_cert)
        verify.verify_ek_chain(ek_cert, [], self._ek_roots, now)
        ak = parse_tpmt_public(field["AKPub"])
        verify.check_ak(ak)
        verify.verify_certify(
            ak, field["CertifiedDevID"], field["CertificationSignature"], devid_pub, b""
        )
        return _Checked(chain[0], tuple(verified), ek, ak, field["AKPub"])

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        with _named_tpm_devid():
            return await self._attest(payload, challenge)

    async def _attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        checked = self._check_payload(payload)
        ek, ak, leaf = checked.ek, checked.ak, checked.leaf
        devid_nonce = os.urandom(NONCE_SIZE)
        secret = os.urandom(hashlib.new(hash_name(ek.name_alg)).digest_size)
        cred = make_credential(ek, ak.name, secret)
        sent = dump(
            {
                "DevID": b64(devid_nonce),
                "CredActivation": {
                    "Credential": b64(cred.id_object[2:]),
                    "Secret": b64(cred.encrypted_secret[2:]),
                },
            }
        )
        try:
            answer = await asyncio.wait_for(challenge(sent), self._timeout)
        except TimeoutError:
            raise AttestationFailed(
                f"tpm_devid: agent did not answer the challenge within {self._timeout:g}s"
            ) from None
        resp = _load_object(answer, "response", {"DevID", "CredActivation"}, set())
        verify_nonce_signature(leaf, devid_nonce, b64field(resp["DevID"], "DevID", 1024))
        activated = b64field(resp["CredActivation"], "CredActivation", 64)
        if not hmac.compare_digest(activated, secret):
            raise AttestationFailed("tpm_devid: activated credential does not match")
        return AttestationResult(
            agent_id=agent_id(self._td, NAME, leaf.fingerprint(hashes.SHA1()).hex()),  # noqa: S303
            selectors=self._selectors(leaf, list(checked.chain)),
            can_reattest=True,
            node_data=tpm2b(checked.ak_pub),
        )

    @staticmethod
    def _selectors(leaf: x509.Certificate, chain: list[x509.Certificate]) -> tuple[Selector, ...]:
        out: list[Selector] = []
        if (cn := _cn(leaf.subject)) is not None:
            out.append(Selector(NAME, f"subject:cn:{cn}"))
        if (cn := _cn(leaf.issuer)) is not None:
            out.append(Selector(NAME, f"issuer:cn:{cn}"))
        for cert in chain[1:]:
            out.append(Selector(NAME, f"ca:fingerprint:{cert.fingerprint(hashes.SHA1()).hex()}"))  # noqa: S303
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class TpmDevidAgentConfig:
    devid_cert_path: str
    devid_priv_path: str
    devid_pub_path: str
    tcti: str = DEFAULT_TCTI

    @classmethod
    def from_settings(cls, settings: Block, context: PluginContext) -> TpmDevidAgentConfig:
        """Relative file paths are taken from the config file's directory; SPIRE's
        ``tpm_device_path`` is the TCTI ``device:<path>``."""
        cert, priv, pub = (
            _required_path(settings, key, context)
            for key in ("devid_cert_path", "devid_priv_path", "devid_pub_path")
        )
        device = settings.optional_string("tpm_device_path")
        tcti = settings.optional_string("tcti")
        settings.finish()
        if device is not None and tcti is not None:
            raise ConfigError(f"{settings.path}: set tpm_device_path or tcti, not both")
        chosen = f"device:{device}" if device is not None else tcti or DEFAULT_TCTI
        Tcti.parse(chosen)
        return cls(cert, priv, pub, chosen)


def read_devid_files(cert_path: str, priv_path: str, pub_path: str) -> tuple[list[bytes], KeyBlob]:
    """The DevID chain (DER, as the PEM file orders it) and key blobs, read without the TPM:
    by ``validate`` and by the attestor at start. ConfigError naming the setting otherwise."""

    def read(path: str, key: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"tpm_devid: cannot read {key} {path!r}: {exc.strerror}") from None

    pem = read(cert_path, "devid_cert_path")
    try:
        chain = [
            c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)
        ]
    except ValueError:
        raise ConfigError(
            f"tpm_devid: devid_cert_path {cert_path!r} holds no PEM certificate"
        ) from None
    return chain, KeyBlob(read(priv_path, "devid_priv_path"), read(pub_path, "devid_pub_path"))


class TpmDevidAgentAttestor:
    """Agent half: DevID key blobs (TPM2B_PRIVATE / TPM2B_PUBLIC files as tpm2_create writes
    them, under the owner SRK) and the DevID certificate chain (PEM)."""

    name = NAME

    def __init__(
        self,
        devid_cert_path: str,
        devid_priv_path: str,
        devid_pub_path: str,
        *,
        tcti: str | Tcti = DEFAULT_TCTI,
        ek_type: str = "rsa-2048",
        ak_type: str = "rsa-2048",
    ) -> None:
        from plastron.tpm.device import TpmDevice  # noqa: PLC0415  # agent only: tpm2-pytss

        self.device = TpmDevice(tcti)
        self._chain, self._devid = read_devid_files(
            devid_cert_path, devid_priv_path, devid_pub_path
        )
        self._ek_type, self._ak_type = ek_type, ak_type
        self._ak: KeyBlob | None = None

    async def payload(self) -> bytes:
        with _named_tpm_devid():
            return await self._payload()

    async def _payload(self) -> bytes:
        ek = await asyncio.to_thread(self.device.read_ek, self._ek_type)
        if ek.cert_der is None:
            raise AttestationFailed(f"tpm_devid: the TPM has no {ek.ek_type} EK certificate")
        ak = await asyncio.to_thread(self.device.create_ak, ek.ek_type, self._ak_type)
        info, sig = await asyncio.to_thread(self.device.certify, ek.ek_type, ak, self._devid)
        self._ak = ak
        return dump(
            {
                "DevIDCert": [b64(c) for c in self._chain],
                "DevIDPub": b64(self._devid.public[2:]),
                "EKCert": b64(ek.cert_der),
                "EKPub": b64(ek.public[2:]),
                "AKPub": b64(ak.public[2:]),
                "CertifiedDevID": b64(info),
                "CertificationSignature": b64(sig),
            }
        )

    async def answer(self, challenge: bytes) -> bytes:
        with _named_tpm_devid():
            return await self._answer(challenge)

    async def _answer(self, challenge: bytes) -> bytes:
        if self._ak is None:
            raise AttestationFailed("tpm_devid: challenge received before the payload was sent")
        obj = _load_object(challenge, "challenge", {"DevID", "CredActivation"}, set())
        nonce = b64field(obj["DevID"], "DevID", 64)
        cred = obj["CredActivation"]
        if not isinstance(cred, dict) or set(cred) != {"Credential", "Secret"}:
            raise AttestationFailed("tpm_devid: CredActivation must hold Credential and Secret")
        id_object = tpm2b(b64field(cred["Credential"], "Credential", MAX_TPM_BLOB))
        secret = tpm2b(b64field(cred["Secret"], "Secret", MAX_TPM_BLOB))
        digest = hashlib.sha256(nonce).digest()
        tpm_sig = await asyncio.to_thread(self.device.sign_digest, self._devid, digest)
        activated = await asyncio.to_thread(
            self.device.activate_credential, self._ek_type, self._ak, id_object, secret
        )
        return dump({"DevID": b64(_signature_bytes(tpm_sig)), "CredActivation": b64(activated)})


def _signature_bytes(tpm_signature: bytes) -> bytes:
    """TPMT_SIGNATURE → what Go's x509.CheckSignature takes (raw RSA or DER ECDSA)."""
    sig = parse_signature(tpm_signature)
    if sig.rsa_sig:
        return sig.rsa_sig
    return encode_dss_signature(int.from_bytes(sig.ecc_r, "big"), int.from_bytes(sig.ecc_s, "big"))
