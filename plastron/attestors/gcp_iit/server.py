"""The server half of ``gcp_iit``: verify the instance identity token (the payload is the raw
JWT, as SPIRE's agents send it), build the agent ID from the template, refuse an instance that
has already attested (trust on first use, as SPIRE: a token can be minted by any process on the
VM, so only the first attestation of an instance is accepted until it is evicted), then the
selectors, with the Compute Engine API when ``use_instance_metadata`` is on.

Selectors: ``project-id:``, ``zone:``, ``instance-name:``, ``sa:`` (when the token names a
service account); with instance metadata, ``tag:<tag>``, ``label:<key>:<value>`` and
``metadata:<key>:<value>`` for the allowed label and metadata keys (an empty or absent value
leaves the trailing colon, as SPIRE).
"""

from __future__ import annotations

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.gcp_iit.compute import ComputeClient, Instance
from plastron.attestors.gcp_iit.config import GcpIitServerConfig, template_values
from plastron.attestors.gcp_iit.token import NAME, IdentityToken, verify
from plastron.attestors.jwks import token_from_payload
from plastron.attestors.jwks_source import KeySource
from plastron.attestors.token_attestor import TokenServerAttestor
from plastron.clock import Clock
from plastron.errors import AttestationFailed, InvalidSelector
from plastron.host_services import AgentAttestedFn
from plastron.selector import Selector
from plastron.spiffe.ids import TrustDomain


class GcpIitServerAttestor(TokenServerAttestor):
    name = NAME

    def __init__(
        self,
        config: GcpIitServerConfig,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        keys: KeySource,
        attested: AgentAttestedFn,
        compute: ComputeClient | None = None,
    ) -> None:
        super().__init__(trust_domain, clock, keys=keys, attested=attested)
        self._config = config
        self._compute = compute

    def __repr__(self) -> str:
        return f"GcpIitServerAttestor(keys={self._keys!r})"

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        cfg = self._config
        token = token_from_payload(payload, method=NAME)
        proved = verify(
            token,
            keys=await self._key_set(token),
            audience=cfg.audience,
            now=self._clock.now(),
            projectid_allow_list=cfg.projectid_allow_list,
        )
        agent_id = await self._first_use(cfg.agent_path_template, template_values(proved))
        instance = None
        if self._compute is not None:
            instance = await self._compute.instance(
                proved.project_id, proved.zone, proved.instance_name
            )
        return AttestationResult(
            agent_id=agent_id, selectors=self._selectors(proved, instance), can_reattest=False
        )

    def _selectors(self, proved: IdentityToken, instance: Instance | None) -> tuple[Selector, ...]:
        values = [
            f"project-id:{proved.project_id}",
            f"zone:{proved.zone}",
            f"instance-name:{proved.instance_name}",
        ]
        if proved.email:
            values.append(f"sa:{proved.email}")
        if instance is not None:
            values += self._instance_values(instance)
        try:
            return tuple(Selector(NAME, v) for v in dict.fromkeys(values))
        except InvalidSelector as exc:
            raise AttestationFailed(
                f"{NAME}: the instance yields an invalid selector: {exc}"
            ) from None

    def _instance_values(self, instance: Instance) -> list[str]:
        cfg = self._config
        values = [f"tag:{t}" for t in instance.tags]
        values += [
            f"label:{k}:{v}"
            for k, v in sorted(instance.labels.items())
            if k in cfg.allowed_label_keys
        ]
        for key, value in instance.metadata:
            if key not in cfg.allowed_metadata_keys:
                continue
            if value is not None and len(value) > cfg.max_metadata_value_size:
                raise AttestationFailed(
                    f"{NAME}: instance metadata {key!r} exceeds max_metadata_value_size "
                    f"({len(value)} > {cfg.max_metadata_value_size})"
                )
            values.append(f"metadata:{key}:{value or ''}")
        return values
