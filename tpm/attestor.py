"""The ``tpm`` attestation method: EK credential activation plus a PCR quote, in one stream.

Server half (no TPM needed): checks the EK (TCG template; certificate chain to a manufacturer CA
or an allow-listed EK public-key hash; public == certificate key) and the AK (restricted,
TPM-resident signing key), then sends a credential bound to the AK name and a fresh quote nonce.
The answer must carry the activated secret (constant-time compare) and a quote by the AK over
the requested PCRs with that nonce; an optional PCR policy pins allowed values.
Agent ID ``spiffe://<td>/spire/agent/tpm/<sha256 hex of EK SPKI DER>``; re-attestable. The AK
public that passed is returned as ``node_data`` so it is stored atomically with the node.

Agent half: reads the EK, creates a fresh AK under it, answers with ActivateCredential + Quote.
Message formats: plastron.tpm.messages.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cryptography import x509

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.certificates import load_untrusted_der
from plastron.clock import Clock, SystemClock
from plastron.configs.block import Block
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext
from plastron.selector import Selector
from plastron.spiffe.ids import TrustDomain, agent_id
from plastron.tpm import verify
from plastron.tpm.blobs import EK_TYPES, KeyBlob
from plastron.tpm.credential import make_credential
from plastron.tpm.messages import NONCE_SIZE, Challenge, Payload, Response, pcr_index
from plastron.tpm.structures import TpmPublic, parse_tpm2b_public
from plastron.tpm.tcti import DEFAULT_TCTI, Tcti

NAME = "tpm"
SECRET_SIZE = 32
DEFAULT_QUOTE_PCRS = tuple(range(8))
DEFAULT_ANSWER_TIMEOUT = 30.0
MAX_ALLOWLIST_BYTES = 4 << 20


def _read_small(path: str, key: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {path} is not a file")
    if p.stat().st_size > MAX_ALLOWLIST_BYTES:
        raise ConfigError(f"{key}: {path} is larger than {MAX_ALLOWLIST_BYTES} bytes")
    return p.read_text()


def load_ek_hashes(path: str) -> frozenset[str]:
    hashes: set[str] = set()
    for n, line in enumerate(_read_small(path, "ek_hash_path").splitlines(), 1):
        text = line.strip().lower()
        if not text or text.startswith("#"):
            continue
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ConfigError(f"ek_hash_path: line {n} of {path} is not a sha256 hex hash")
        hashes.add(text)
    return frozenset(hashes)


def load_pcr_policy(path: str) -> dict[int, frozenset[str]]:
    try:
        raw = json.loads(_read_small(path, "pcr_policy_path"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"pcr_policy_path: {path} is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"pcr_policy_path: {path} must hold an object {{index: [hex, …]}}")
    policy: dict[int, frozenset[str]] = {}
    for key, allowed in raw.items():
        try:
            index = pcr_index(key, "pcr_policy_path index")
        except AttestationFailed as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(allowed, list) or not all(
            isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v)
            for v in allowed
        ):
            raise ConfigError(f"pcr_policy_path: PCR {key} must list sha256 hex values")
        policy[index] = frozenset(v.lower() for v in allowed)
    return policy


@dataclass(frozen=True)
class TpmServerConfig:
    endorsement_ca_path: str | None = None
    ek_hash_path: str | None = None
    pcrs: tuple[int, ...] = ()
    pcr_policy_path: str | None = None

    @classmethod
    def from_settings(cls, settings: Block, context: PluginContext) -> TpmServerConfig:
        """Relative file paths are taken from the config file's directory."""
        pcrs = settings.raw("pcrs", [])
        if not isinstance(pcrs, list):
            raise ConfigError(f"{settings.where('pcrs')} must be a list of PCR indices")
        try:
            indices = tuple(sorted({pcr_index(p, "pcrs entry") for p in pcrs}))
        except AttestationFailed as exc:
            raise ConfigError(f"{settings.where('pcrs')}: {exc}") from None

        def path(key: str) -> str | None:
            value = settings.optional_string(key)
            return None if value is None else str(context.resolve(value))

        config = cls(
            endorsement_ca_path=path("endorsement_ca_path"),
            ek_hash_path=path("ek_hash_path"),
            pcrs=indices,
            pcr_policy_path=path("pcr_policy_path"),
        )
        settings.finish()
        return config


@dataclass(frozen=True)
class _TrustedEk:
    public: TpmPublic
    ek_hash: str
    chain: tuple[x509.Certificate, ...] = ()
    identity: dict[str, str] = field(default_factory=dict)


class TpmServerAttestor:
    name = NAME

    def __init__(
        self,
        config: TpmServerConfig,
        trust_domain: TrustDomain,
        clock: Clock | None = None,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
    ) -> None:
        if not config.endorsement_ca_path and not config.ek_hash_path:
            raise ConfigError("NodeAttestor tpm: set endorsement_ca_path or ek_hash_path")
        self._td = trust_domain
        self._clock = clock or SystemClock()
        self._timeout = answer_timeout
        self._roots = (
            verify.load_certificates(config.endorsement_ca_path, "endorsement_ca_path")
            if config.endorsement_ca_path
            else []
        )
        self._hashes = load_ek_hashes(config.ek_hash_path) if config.ek_hash_path else frozenset()
        self._policy = load_pcr_policy(config.pcr_policy_path) if config.pcr_policy_path else {}
        self._selector_pcrs = config.pcrs
        quoted = set(config.pcrs) | set(self._policy)
        self._quote_pcrs = tuple(sorted(quoted)) if quoted else DEFAULT_QUOTE_PCRS

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        msg = Payload.parse(payload)
        ek = self._trusted_ek(msg)
        ak = parse_tpm2b_public(msg.ak_pub)
        verify.check_ak(ak)
        secret, nonce = os.urandom(SECRET_SIZE), os.urandom(NONCE_SIZE)
        cred = make_credential(ek.public, ak.name, secret)
        sent = Challenge(cred.id_object, cred.encrypted_secret, nonce, self._quote_pcrs)
        try:
            answer = await asyncio.wait_for(challenge(sent.to_bytes()), self._timeout)
        except TimeoutError:
            raise AttestationFailed(
                f"tpm: agent did not answer the challenge within {self._timeout:g}s"
            ) from None
        resp = Response.parse(answer)
        if not hmac.compare_digest(resp.secret, secret):
            raise AttestationFailed(
                "tpm: activated credential does not match (the AK is not in the EK's TPM, "
                "or the answer is stale)"
            )
        verify.verify_quote(
            ak, resp.quote, resp.quote_sig, nonce, pcrs=resp.pcrs, expected=self._quote_pcrs
        )
        self._check_pcr_policy(resp.pcrs)
        return AttestationResult(
            agent_id=agent_id(self._td, NAME, ek.ek_hash),
            selectors=self._selectors(ek, resp.pcrs),
            can_reattest=True,
            node_data=msg.ak_pub,
        )

    def _trusted_ek(self, msg: Payload) -> _TrustedEk:
        ek = parse_tpm2b_public(msg.ek_pub)
        verify.check_ek_template(ek)
        ek_hash = verify.spki_sha256(ek.public_key())
        cert: x509.Certificate | None = None
        if msg.ek_cert is not None:
            cert = _load_der(msg.ek_cert, "EK certificate")
            verify.check_ek_matches_cert(ek, cert)
        listed = ek_hash in self._hashes
        if cert is not None and self._roots:
            chain = [_load_der(c, "EK chain certificate") for c in msg.ek_chain]
            try:
                verified = verify.verify_ek_chain(cert, chain, self._roots, self._clock.now())
            except AttestationFailed:
                if not listed:
                    raise
            else:
                identity = verify.ek_cert_identity(cert)
                return _TrustedEk(ek, ek_hash, tuple(verified[1:]), identity)
        if listed:
            return _TrustedEk(ek, ek_hash)
        raise AttestationFailed(
            f"tpm: EK {ek_hash} has no certificate chaining to a trusted CA and is not "
            "in the EK hash allow-list"
        )

    def _check_pcr_policy(self, pcrs: dict[int, bytes]) -> None:
        for index, allowed in sorted(self._policy.items()):
            value = pcrs[index].hex()
            if value not in allowed:
                raise AttestationFailed(
                    f"tpm: PCR {index} value {value} is not allowed by the PCR policy"
                )

    def _selectors(self, ek: _TrustedEk, pcrs: dict[int, bytes]) -> tuple[Selector, ...]:
        out = [Selector(NAME, f"ek_pubhash:{ek.ek_hash}")]
        out += [Selector(NAME, f"ek_ca:{verify.cert_sha256(c)}") for c in ek.chain]
        out += [Selector(NAME, f"{k}:{v}") for k, v in sorted(ek.identity.items())]
        out += [Selector(NAME, f"pcr:sha256:{i}:{pcrs[i].hex()}") for i in self._selector_pcrs]
        return tuple(sorted(set(out)))


def _load_der(der: bytes, what: str) -> x509.Certificate:
    return load_untrusted_der(der, what, lambda msg: AttestationFailed(f"tpm: {msg}"))


@dataclass(frozen=True)
class TpmAgentConfig:
    tcti: str = DEFAULT_TCTI
    ek_type: str = "auto"

    @classmethod
    def from_settings(cls, settings: Block) -> TpmAgentConfig:
        tcti = settings.string("tcti", cls.tcti)
        ek_type = settings.choice("ek_type", cls.ek_type, ("auto", *EK_TYPES))
        settings.finish()
        Tcti.parse(tcti)
        return cls(tcti=tcti, ek_type=ek_type)


class TpmAgentAttestor:
    name = NAME

    def __init__(self, tcti: str | Tcti = DEFAULT_TCTI, ek_type: str = "auto") -> None:
        from plastron.tpm.device import TpmDevice  # noqa: PLC0415  # agent only: tpm2-pytss

        self.device = TpmDevice(tcti)
        self._ek_type = ek_type
        self._state: tuple[str, KeyBlob] | None = None

    async def payload(self) -> bytes:
        """Read the EK and create a fresh AK under it (one AK per attestation)."""
        ek, ak = await asyncio.to_thread(self.device.enroll, self._ek_type)
        self._state = (ek.ek_type, ak)
        return Payload(ek_pub=ek.public, ak_pub=ak.public, ek_cert=ek.cert_der).to_bytes()

    async def answer(self, challenge: bytes) -> bytes:
        if self._state is None:
            raise AttestationFailed("tpm: challenge received before the payload was sent")
        ek_type, ak = self._state
        msg = Challenge.parse(challenge)
        secret, quote = await asyncio.to_thread(
            partial(
                self.device.activate_and_quote,
                ek_type,
                ak,
                msg.id_object,
                msg.encrypted_secret,
                nonce=msg.nonce,
                pcrs=list(msg.pcrs),
            )
        )
        return Response(secret, quote.attest, quote.signature, quote.pcrs).to_bytes()
