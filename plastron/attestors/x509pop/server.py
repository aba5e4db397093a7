"""The ``x509pop`` attestation method (SPIRE's formats): a node proves possession of the private
key of an X.509 certificate issued to it out of band.

Server half: verify the payload's chain to a trusted CA (``mode "external_pki"``: the PEM files
in ``ca_bundle_path(s)``; ``mode "spiffe"``: the trust domain's own X.509 authorities), then
challenge the agent with a fresh 32-byte nonce and verify its signature (see
:mod:`plastron.attestors.x509pop.wire`). The agent ID is ``spiffe://<td>/spire/agent`` plus the
rendered ``agent_path_template`` (default ``/x509pop/<SHA-1 of the leaf DER>``), parsed strictly.
Selectors: ``subject:cn:``, ``ca:fingerprint:`` (each certificate above the leaf),
``serialnumber:``, ``san:<key>:<value>`` (URI SANs ``x509pop://<td>/<key>/<value>``).
Re-attestable. The agent half lives in :mod:`plastron.attestors.x509pop.agent`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.certificates import load_untrusted_der
from plastron.attestors.x509pop.config import X509PopServerConfig
from plastron.attestors.x509pop.template import TemplateValues
from plastron.attestors.x509pop.wire import (
    NAME,
    NONCE_LEN,
    Challenge,
    decode_payload,
    decode_response,
    encode_challenge,
    key_kind,
    verify_response,
)
from plastron.clock import Clock
from plastron.errors import (
    AttestationFailed,
    ConfigError,
    InvalidArgument,
    InvalidSelector,
    InvalidSpiffeId,
)
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain

# The trust domain's current X.509 authorities (mode "spiffe"), fetched per attestation.
TrustBundleFn = Callable[[], Awaitable[Sequence[x509.Certificate]]]

# ---- certificate facts --------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-1 hex of the certificate DER (SPIRE's x509pop fingerprint)."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324


def serial_number_hex(cert: x509.Certificate) -> str:
    text = format(cert.serial_number, "x")
    return "0" + text if len(text) % 2 else text


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return ""
    value = names[-1].value  # Go's pkix.Name keeps the last CN
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def uri_san_selectors(cert: x509.Certificate, td: TrustDomain) -> dict[str, str]:
    """``x509pop://<td>/<key>/<value>`` URI SANs as {key: value} (last one of a key wins)."""
    prefix = f"x509pop://{td.name}/"
    found: dict[str, str] = {}
    for uri in _uris(cert):
        if not uri.startswith(prefix):
            continue
        key, sep, value = unquote(urlsplit(uri).path).strip("/").partition("/")
        if key and sep and value:
            found[key] = value
    return found


def _describe(cert: x509.Certificate) -> str:
    return f"subject={cert.subject.rfc4514_string()[:200]!r}"


# ---- server half --------------------------------------------------------------------------


class X509PopServerAttestor:
    """Verifies a node's certificate chain and its proof of possession of the leaf key."""

    name = NAME

    def __init__(
        self,
        config: X509PopServerConfig,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        trust_bundle: TrustBundleFn | None = None,
    ) -> None:
        if config.mode == "spiffe" and trust_bundle is None:
            raise ConfigError("x509pop: mode spiffe needs the trust domain's X.509 authorities")
        self._config = config
        self._td = trust_domain
        self._clock = clock
        self._trust_bundle = trust_bundle

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        cfg = self._config
        leaf, intermediates = self._parse_chain(payload)
        now = self._clock.now()
        _check_leaf(leaf, now)
        chain = await self._verify_chain(leaf, intermediates, now)
        public_key = leaf.public_key()
        if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise AttestationFailed(f"x509pop: leaf key must be RSA or EC ({_describe(leaf)})")
        sent = Challenge(key_kind(public_key), os.urandom(NONCE_LEN))
        answer = await challenge(encode_challenge(sent))
        verify_response(public_key, sent, decode_response(answer))
        svid_path = self._svid_path_trimmed(leaf) if cfg.mode == "spiffe" else ""
        sans = uri_san_selectors(leaf, self._td)
        values = TemplateValues(
            fingerprint=fingerprint(leaf),
            trust_domain=self._td.name,
            serial_number_hex=serial_number_hex(leaf),
            common_name=common_name(leaf),
            svid_path_trimmed=svid_path,
            uri_san_selectors=sans,
        )
        return AttestationResult(
            agent_id=self._agent_id(values),
            selectors=_selectors(leaf, chain, sans),
            can_reattest=True,
        )

    def _parse_chain(self, payload: bytes) -> tuple[x509.Certificate, list[x509.Certificate]]:
        ders = decode_payload(payload, self._config.max_intermediates + 1)
        certs: list[x509.Certificate] = []
        for i, der in enumerate(ders):
            what = "leaf certificate" if i == 0 else f"intermediate certificate {i - 1}"
            cert = load_untrusted_der(der, what, lambda msg: InvalidArgument(f"x509pop: {msg}"))
            key = cert.public_key()
            if cert.serial_number <= 0:
                raise InvalidArgument(f"x509pop: {what} serial number is not positive (RFC 5280)")
            if isinstance(key, rsa.RSAPublicKey) and key.key_size > self._config.max_rsa_key_size:
                raise InvalidArgument(
                    f"x509pop: {what} RSA key is {key.key_size} bits; "
                    f"max_rsa_key_size is {self._config.max_rsa_key_size}"
                )
            certs.append(cert)
        return certs[0], certs[1:]

    async def _roots(self) -> list[x509.Certificate]:
        if self._trust_bundle is None:
            return list(self._config.ca_bundle)
        roots = list(await self._trust_bundle())
        if not roots:
            raise AttestationFailed("x509pop: the trust domain has no X.509 authorities yet")
        return roots

    async def _verify_chain(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate], now: dt.datetime
    ) -> list[x509.Certificate]:
        """The verified chain leaf → trust anchor. The leaf policy is permissive (as SPIRE, any
        EKU); CA certificates get the Web PKI CA checks (cA, keyCertSign, validity)."""
        verifier = (
            PolicyBuilder()
            .store(Store(await self._roots()))
            .time(now)
            .max_chain_depth(self._config.max_intermediates + 1)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            return list(verifier.verify(leaf, intermediates).chain)
        except (VerificationError, ValueError) as exc:
            raise AttestationFailed(
                f"x509pop: certificate chain does not lead to a trusted CA ({_describe(leaf)}, "
                f"issuer={leaf.issuer.rfc4514_string()[:200]!r}): {exc}"
            ) from None

    def _svid_path_trimmed(self, leaf: x509.Certificate) -> str:
        uris = [u for u in _uris(leaf) if u.startswith("spiffe://")]
        if not uris:
            raise AttestationFailed(f"x509pop: leaf has no SPIFFE ID URI SAN ({_describe(leaf)})")
        try:
            sid = SpiffeId.parse(uris[0])
        except InvalidSpiffeId as exc:
            raise AttestationFailed(f"x509pop: leaf SPIFFE ID is not valid: {exc}") from None
        prefix = self._config.spiffe_prefix
        if not sid.member_of(self._td) or not sid.path.startswith(prefix):
            raise AttestationFailed(
                f"x509pop: SPIFFE ID {str(sid)!r} is not under spiffe://{self._td.name}{prefix}"
            )
        return sid.path.removeprefix(prefix)

    def _agent_id(self, values: TemplateValues) -> SpiffeId:
        return self._config.agent_path_template.agent_id(self._td, values)


def _check_leaf(leaf: x509.Certificate, now: dt.datetime) -> None:
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise AttestationFailed(
            f"x509pop: leaf certificate is not valid at {now.isoformat()} (valid from "
            f"{leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()}, "
            f"{_describe(leaf)})"
        )
    try:
        bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is not None and bc.ca:
        # a CA key is not a node identity; Plastron refuses what SPIRE would accept here
        raise AttestationFailed(
            f"x509pop: leaf certificate is a CA certificate ({_describe(leaf)})"
        )
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is None or not ku.digital_signature:
        raise AttestationFailed(
            "x509pop: leaf certificate is not intended for digital signature use "
            f"(keyUsage lacks digitalSignature, {_describe(leaf)})"
        )


def _selectors(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], sans: Mapping[str, str]
) -> tuple[Selector, ...]:
    values: list[str] = []
    cn = common_name(leaf)
    if cn:
        values.append(f"subject:cn:{cn}")
    seen: set[str] = set()
    for cert in chain[1:]:
        fp = fingerprint(cert)
        if fp not in seen:
            seen.add(fp)
            values.append(f"ca:fingerprint:{fp}")
    values.append(f"serialnumber:{serial_number_hex(leaf)}")
    values += [f"san:{k}:{v}" for k, v in sans.items()]
    try:
        return tuple(Selector(NAME, v) for v in values)
    except InvalidSelector as exc:
        raise AttestationFailed(f"x509pop: certificate yields an invalid selector: {exc}") from None
