"""The server half of ``aws_iam``: check the agent's signed ``GetCallerIdentity`` request
(:func:`.wire.check_request`), refuse a second use of its signature, have STS answer it, and
admit the role it names.

Agent ID: ``spiffe://<td>/spire/agent/aws_iam/<account>/<role name>/<uuid>``, a new UUID per
attestation: the method proves a role, which any number of tasks share at once, so there is no
node to be unique about. The method is re-attestable (a task that lost its SVID attests again and
becomes a new agent) and never "already attested". It declares ``unique_nodes = False``: its
agents get the server's short ``non_unique_agent_ttl`` SVIDs and their node rows are pruned
once those expire.

Selectors: ``account:<id>``, ``role:<name>``, ``arn:<caller ARN>`` (the assumed-role session
ARN STS returns), ``user_id:<role ID>:<session>``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from plastron.attestors.aws_iam.config import NAME, AwsIamServerConfig
from plastron.attestors.aws_iam.sts import CallerIdentity, get_caller_identity
from plastron.attestors.aws_iam.wire import check_request, parse_payload
from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.template import agent_path, is_canonical_segment
from plastron.clock import Clock
from plastron.errors import AttestationFailed, InvalidSelector, InvalidSpiffeId, Unavailable
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain

# Signatures remembered at once (each for at most 2 * max_request_age); beyond it, attestations
# wait for old ones to age out rather than forget one still inside its window.
MAX_REMEMBERED_SIGNATURES = 200_000


class SeenSignatures:
    """Signatures already presented, each kept until its request can no longer be accepted.
    Per server process: servers sharing a datastore do not share it (see the docs)."""

    def __init__(self, limit: int = MAX_REMEMBERED_SIGNATURES) -> None:
        self._until: dict[str, dt.datetime] = {}
        self._limit = limit
        self._lock = asyncio.Lock()

    async def first_use(self, signature: str, until: dt.datetime, now: dt.datetime) -> None:
        async with self._lock:
            if len(self._until) >= self._limit:
                self._until = {s: t for s, t in self._until.items() if t > now}
            if signature in self._until:
                raise AttestationFailed(
                    f"{NAME}: this signed request was already presented (a replay)"
                )
            if len(self._until) >= self._limit:
                raise Unavailable(f"{NAME}: too many attestations in flight; try again")
            self._until[signature] = until


class AwsIamServerAttestor:
    name = NAME
    unique_nodes = False

    def __init__(self, config: AwsIamServerConfig, trust_domain: TrustDomain, clock: Clock) -> None:
        self._config = config
        self._td = trust_domain
        self._clock = clock
        self._seen = SeenSignatures()

    def __repr__(self) -> str:
        return f"AwsIamServerAttestor({self._config.sts_endpoint!r})"

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        cfg = self._config
        signed = parse_payload(payload)
        now = self._clock.now()
        check_request(
            signed, server_id=cfg.server_id, allowed_hosts=cfg.allowed_hosts, now=now,
            max_age=cfg.max_request_age,
        )  # fmt: skip
        await self._seen.first_use(signed.signature, signed.signed_at + cfg.max_request_age, now)
        caller = await get_caller_identity(cfg.sts_endpoint, signed)
        if caller.account not in cfg.account_allow_list:
            raise AttestationFailed(
                f"{NAME}: account {caller.account} is not in the account_allow_list"
            )
        return AttestationResult(
            agent_id=self._agent_id(caller), selectors=_selectors(caller), can_reattest=True
        )

    def _agent_id(self, caller: CallerIdentity) -> SpiffeId:
        if not is_canonical_segment(caller.role):
            raise AttestationFailed(
                f"{NAME}: role name {caller.role[:100]!r} is not a canonical path segment "
                "(letters, digits, '.', '_', '-')"
            )
        try:
            return agent_path(self._td, f"/{NAME}/{caller.account}/{caller.role}/{uuid.uuid4()}")
        except InvalidSpiffeId as exc:
            raise AttestationFailed(f"{NAME}: cannot build the agent ID: {exc}") from None


def _selectors(caller: CallerIdentity) -> tuple[Selector, ...]:
    values = [
        f"account:{caller.account}",
        f"role:{caller.role}",
        f"arn:{caller.arn}",
        f"user_id:{caller.user_id}",
    ]
    try:
        return tuple(Selector(NAME, v) for v in values)
    except InvalidSelector as exc:
        raise AttestationFailed(f"{NAME}: STS's answer yields an invalid selector: {exc}") from None
