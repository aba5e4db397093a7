"""The agentless token exchange: a platform credential in, an SVID out.

The credential is verified by the server's own NodeAttestor plugin for its method (the same
code, config and selectors as node attestation), then matched against registration entries
whose parent is ``spiffe://<td>/spire/agentless/<method>`` and whose selectors are a subset of
the credential's. Every credential is exchanged once: its digest is recorded in the datastore
until it expires, so a replay to this or any server sharing the datastore is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jwt
from cryptography import x509

from plastron.attestors.base import ServerNodeAttestor
from plastron.clock import Clock, to_unix
from plastron.datastore import DataStore
from plastron.errors import InvalidArgument, PlastronError
from plastron.logs import fields
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.agentless.limits import SourceRateLimit
from plastron.server.ca.csr import csr_public_key, parse_csr
from plastron.server.ca.server_ca import ServerCA
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.wire.limits import check_jwt_audience

audit_log = logging.getLogger("plastron.audit")

MAX_CREDENTIAL_CHARS = 16 * 1024
# A credential without a readable expiry is remembered this long (seconds).
DEFAULT_REPLAY_WINDOW = 3600
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
AZURE_ISSUER_PREFIXES = ("https://sts.windows.net/", "https://login.microsoftonline.com/")


class ExchangeRefused(PlastronError):
    """A refused exchange as RFC 6749 §5.2 states it: an error code and a precise reason."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class ExchangeRequest:
    credential: str
    source: str  # the caller's address, for the rate limit and the audit line
    audience: tuple[str, ...] = ()
    spiffe_id: str = ""
    csr: str = ""  # base64 DER
    cluster: str = ""  # k8s_psat: the configured cluster the token comes from


@dataclass(frozen=True)
class ExchangeResult:
    spiffe_id: SpiffeId
    token: str
    expires_at: int
    x509_svid: list[x509.Certificate] = field(default_factory=list)
    bundle: list[x509.Certificate] = field(default_factory=list)


def agentless_parent(td: TrustDomain, method: str) -> SpiffeId:
    return SpiffeId(td, f"/spire/agentless/{method}")


def _unverified_claims(credential: str) -> dict[str, object] | None:
    try:
        claims = jwt.decode(credential, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def _aws_iam_payload(credential: str) -> bytes | None:
    """The aws_iam attestation payload (Vault's shape: ``iam_http_request_method``,
    ``iam_request_url``, ``iam_request_body``, ``iam_request_headers``) when the credential
    is that JSON, base64 or base64url encoded; the plugin checks everything in it."""
    try:
        padded = credential + "=" * (-len(credential) % 4)
        decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        doc = json.loads(decoded)
    except (binascii.Error, ValueError):
        return None
    if isinstance(doc, dict) and "iam_http_request_method" in doc:
        return decoded
    return None


def method_and_payload(credential: str, cluster: str) -> tuple[str, bytes]:
    """Which attestation method verifies this credential, and the payload its NodeAttestor
    takes (the shapes the agents send). The issuer only routes: the plugin verifies."""
    claims = _unverified_claims(credential)
    if claims is None:
        aws = _aws_iam_payload(credential)
        if aws is not None:
            return "aws_iam", aws
        raise ExchangeRefused(
            "invalid_request",
            "the bearer credential is neither a JWT (GCP, Azure or Kubernetes token) nor a "
            "base64 aws_iam signed sts:GetCallerIdentity request",
        )
    issuer = str(claims.get("iss", ""))
    if issuer in GOOGLE_ISSUERS:
        return "gcp_iit", credential.encode()
    if issuer.startswith(AZURE_ISSUER_PREFIXES):
        return "azure_msi", json.dumps({"token": credential}).encode()
    if not cluster:
        raise ExchangeRefused(
            "invalid_request",
            f"a token of issuer {issuer[:200]!r} is taken as a Kubernetes service-account "
            'token: name its cluster ("cluster" in the request body)',
        )
    return "k8s_psat", json.dumps({"cluster": cluster, "token": credential}).encode()


def credential_expiry(credential: str, now: int) -> int:
    claims = _unverified_claims(credential) or {}
    exp = claims.get("exp")
    if isinstance(exp, int) and not isinstance(exp, bool) and exp > now:
        return exp
    return now + DEFAULT_REPLAY_WINDOW


async def _no_challenge(_: bytes) -> bytes:
    raise ExchangeRefused(
        "invalid_grant", "this attestation method needs a challenge round; it cannot be exchanged"
    )


class TokenExchange:
    def __init__(
        self,
        *,
        trust_domain: TrustDomain,
        attestors: Mapping[str, ServerNodeAttestor],
        datastore: DataStore,
        ca: Callable[[], ServerCA | None],
        bundle: Callable[[], Bundle | None],
        clock: Clock,
        rate_limit: SourceRateLimit,
    ) -> None:
        self._td = trust_domain
        self._attestors = attestors
        self._datastore = datastore
        self._ca = ca
        self._bundle = bundle
        self._clock = clock
        self._rate_limit = rate_limit

    async def exchange(self, request: ExchangeRequest) -> ExchangeResult:
        """The SVIDs for ``request``, or ExchangeRefused; one audit line either way."""
        facts: dict[str, object] = {"caller_addr": request.source}
        try:
            result = await self._exchange(request, facts)
        except ExchangeRefused as exc:
            self._audit(facts, status="refused", error=exc.error, reason=exc.description)
            raise
        self._audit(facts, status="ok", spiffe_id=str(result.spiffe_id))
        return result

    def _audit(self, facts: dict[str, object], **outcome: object) -> None:
        line = {"type": "audit", "service": "agentless", "method": "TokenExchange", **facts}
        audit_log.info("token exchange", extra=fields(**line, **outcome))

    async def _exchange(self, request: ExchangeRequest, facts: dict[str, object]) -> ExchangeResult:
        if not self._rate_limit.allow(request.source):
            raise ExchangeRefused(
                "slow_down", f"too many exchanges from {request.source}; retry later", 429
            )
        if not request.credential or len(request.credential) > MAX_CREDENTIAL_CHARS:
            raise ExchangeRefused(
                "invalid_request",
                f"the bearer credential must be 1..{MAX_CREDENTIAL_CHARS} characters",
            )
        audience = self._audience(request)
        method, payload = method_and_payload(request.credential, request.cluster)
        facts["attestation_type"] = method
        selectors = await self._verify(method, payload)
        entry = await self._choose_entry(method, selectors, request.spiffe_id)
        # Recorded only once verified (garbage cannot fill the table) and matched (a missing
        # entry does not burn the caller's credential).
        await self._refuse_replay(request.credential)
        return await self._mint(entry, audience, request.csr)

    def _audience(self, request: ExchangeRequest) -> tuple[str, ...]:
        if not request.audience:
            raise ExchangeRefused("invalid_request", "audience: at least one is required")
        try:
            return check_jwt_audience(list(request.audience))
        except InvalidArgument as exc:
            raise ExchangeRefused("invalid_request", f"audience: {exc}") from None

    async def _verify(self, method: str, payload: bytes) -> tuple[Selector, ...]:
        attestor = self._attestors.get(method)
        if attestor is None:
            raise ExchangeRefused(
                "invalid_grant",
                f"{method} credentials are not accepted: no NodeAttestor {method!r} is "
                "configured on this server",
            )
        try:
            result = await attestor.attest(payload, _no_challenge)
        except ExchangeRefused:
            raise
        except PlastronError as exc:
            raise ExchangeRefused("invalid_grant", str(exc)) from None
        return result.selectors

    async def _refuse_replay(self, credential: str) -> None:
        now = to_unix(self._clock.now())
        digest = hashlib.sha256(credential.encode()).hexdigest()
        expiry = credential_expiry(credential, now)
        if not await self._datastore.record_exchanged_credential(digest, expiry):
            raise ExchangeRefused(
                "invalid_grant",
                "this credential was already exchanged (replay); obtain a fresh one",
            )

    async def _candidates(
        self, method: str, selectors: tuple[Selector, ...]
    ) -> list[RegistrationEntry]:
        parent = agentless_parent(self._td, method)
        found: list[RegistrationEntry] = []
        token = ""
        while True:
            page, token = await self._datastore.list_entries(
                page_size=1000,
                page_token=token,
                by_parent_id=parent,
                by_selectors=(selectors, "subset"),
            )
            found += page
            if not token:
                return found

    async def _choose_entry(
        self, method: str, selectors: tuple[Selector, ...], wanted: str
    ) -> RegistrationEntry:
        entries = await self._candidates(method, selectors)
        now = to_unix(self._clock.now())
        entries = [e for e in entries if not e.expires_at or e.expires_at > now]
        shown = ", ".join(str(s) for s in selectors)
        if not entries:
            raise ExchangeRefused(
                "invalid_target",
                f"no entry under {agentless_parent(self._td, method)} matches the "
                f"credential's selectors [{shown}]",
            )
        ids = sorted({str(e.spiffe_id) for e in entries})
        if wanted:
            chosen = [e for e in entries if str(e.spiffe_id) == wanted]
            if not chosen:
                raise ExchangeRefused(
                    "invalid_target",
                    f"the credential does not match an entry for {wanted[:2048]!r}; "
                    f"it matches: {', '.join(ids)}",
                )
            return chosen[0]
        if len(ids) > 1:
            raise ExchangeRefused(
                "invalid_target",
                f"the credential matches several SPIFFE IDs; name one as spiffe_id: "
                f"{', '.join(ids)}",
            )
        return entries[0]

    async def _mint(
        self, entry: RegistrationEntry, audience: tuple[str, ...], csr_text: str
    ) -> ExchangeResult:
        ca = self._ca()
        if ca is None:
            raise ExchangeRefused("temporarily_unavailable", "the CA is not ready", 503)
        public_key = None
        if csr_text:
            try:
                public_key = csr_public_key(parse_csr(base64.b64decode(csr_text, validate=True)))
            except (binascii.Error, ValueError):
                raise ExchangeRefused("invalid_request", "csr: not base64") from None
            except InvalidArgument as exc:
                raise ExchangeRefused("invalid_request", str(exc)) from None
        try:
            token = await ca.sign_jwt_svid(
                spiffe_id=entry.spiffe_id, audience=audience, ttl=entry.jwt_svid_ttl
            )
            chain = []
            if public_key is not None:
                chain = await ca.sign_workload_x509_svid(
                    spiffe_id=entry.spiffe_id,
                    public_key=public_key,
                    ttl=entry.x509_svid_ttl,
                    dns_names=entry.dns_names,
                )
        except PlastronError as exc:
            raise ExchangeRefused("temporarily_unavailable", str(exc), 503) from None
        claims = jwt.decode(token, options={"verify_signature": False})
        bundle = self._bundle()
        roots = bundle.x509_certificates() if bundle is not None and chain else []
        return ExchangeResult(entry.spiffe_id, token, int(claims["exp"]), chain, roots)
