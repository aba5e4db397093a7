"""The server half of aws_iid.

1. Decode SPIRE's payload and pick the strongest signature present: ``rsa2048``, else the
   raw ``signature``, else ``pkcs7`` if ``allow_dsa_pkcs7`` (a weaker one beside a stronger one
   is ignored, as SPIRE does: the ``rsa`` certificates expire years before the ``rsa2048``
   ones).
2. :func:`~plastron.attestors.aws_iid.verify.verify` it offline against the region's
   certificates with the server's clock.
3. ``account_allow_list``.
4. The EC2 API (``use_ec2_api``): the instance must be pending or running and visible to the
   server's credentials; the block-device check; tags for the template and the selectors.
5. The agent ID from ``agent_path_template`` (default
   ``/aws_iid/<account>/<region>/<instance>``), parsed strictly.
6. Trust on first use: an instance already attested is refused until its agent is evicted (the
   server also refuses it atomically when it writes the node).

Selectors: ``account_id:``, ``az:``, ``image:id:``, ``instance:id:``, ``region:`` from the
document; ``tag:<k>:<v>``, ``sg:id:``, ``sg:name:``, ``iamrole:`` from the EC2 and IAM APIs.
"""

from __future__ import annotations

import asyncio

from plastron.attestors.aws_iid.config import AwsIidServerConfig
from plastron.attestors.aws_iid.document import NAME, IdentityDocument
from plastron.attestors.aws_iid.ec2 import Ec2Api, InstanceFacts
from plastron.attestors.aws_iid.verify import verify
from plastron.attestors.aws_iid.wire import Payload, decode_payload
from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.attestors.template import MappingValues
from plastron.clock import Clock
from plastron.errors import AttestationFailed, InvalidSelector
from plastron.host_services import AgentAttestedFn
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain


def chosen_signature(payload: Payload, allow_dsa_pkcs7: bool) -> Payload:
    """The payload with only the one signature the server verifies."""
    if payload.rsa2048:
        return Payload(payload.document, rsa2048=payload.rsa2048)
    if payload.signature:
        return Payload(payload.document, signature=payload.signature)
    if payload.pkcs7:
        if not allow_dsa_pkcs7:
            raise AttestationFailed(
                f"{NAME}: the payload's only signature is the legacy DSA pkcs7, which this "
                "server accepts only with allow_dsa_pkcs7 = true"
            )
        return Payload(payload.document, pkcs7=payload.pkcs7)
    raise AttestationFailed(f"{NAME}: the payload carries no signature (rsa2048 or signature)")


class AwsIidServerAttestor:
    name = NAME

    def __init__(
        self,
        config: AwsIidServerConfig,
        trust_domain: TrustDomain,
        clock: Clock,
        agent_attested: AgentAttestedFn,
        ec2: Ec2Api | None = None,
    ) -> None:
        self._config = config
        self._td = trust_domain
        self._clock = clock
        self._agent_attested = agent_attested
        self._ec2 = ec2 if ec2 is not None or not config.use_ec2_api else Ec2Api(config.api, clock)

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        cfg = self._config
        chosen = chosen_signature(decode_payload(payload), cfg.allow_dsa_pkcs7)
        doc = verify(
            chosen.document,
            rsa2048=chosen.rsa2048,
            signature=chosen.signature,
            pkcs7=chosen.pkcs7,
            now=self._clock.now(),
            certificates=cfg.certificates,
        )
        if cfg.account_allow_list and doc.account_id not in cfg.account_allow_list:
            raise AttestationFailed(
                f"{NAME}: account {doc.account_id} is not in account_allow_list"
            )
        facts = InstanceFacts()
        needs_tags = cfg.agent_path_template.uses_map("Tags")
        if needs_tags:
            facts = await self._describe(doc)
        agent_id = self._agent_id(doc, facts)
        if await self._agent_attested(agent_id):
            raise AttestationFailed(
                f"{NAME}: instance {doc.instance_id} has already attested as {agent_id} "
                "(trust on first use); evict the agent to attest it again"
            )
        if self._ec2 is not None and not needs_tags:
            facts = await self._describe(doc)
        return AttestationResult(
            agent_id=agent_id, selectors=_selectors(doc, facts), can_reattest=False
        )

    async def _describe(self, doc: IdentityDocument) -> InstanceFacts:
        assert self._ec2 is not None
        cfg = self._config
        return await asyncio.to_thread(
            self._ec2.describe,
            doc,
            roles=not cfg.disable_instance_profile_selectors,
            block_device=not cfg.skip_block_device
            and doc.account_id not in cfg.local_validation_accounts,
        )

    def _agent_id(self, doc: IdentityDocument, facts: InstanceFacts) -> SpiffeId:
        values = MappingValues(
            NAME,
            {
                ("PluginName",): NAME,
                ("AccountID",): doc.account_id,
                ("Region",): doc.region,
                ("InstanceID",): doc.instance_id,
                ("TrustDomain",): self._td.name,
            },
            {"Tags": facts.tags},
            missing="{method}: agent_path_template references .{map}.{key}, but the instance "
            "has no tag {key!r}",
        )
        return self._config.agent_path_template.agent_id(self._td, values)


def _selectors(doc: IdentityDocument, facts: InstanceFacts) -> tuple[Selector, ...]:
    values = {
        f"account_id:{doc.account_id}",
        f"az:{doc.availability_zone}",
        f"image:id:{doc.image_id}",
        f"instance:id:{doc.instance_id}",
        f"region:{doc.region}",
    }
    values.update(f"tag:{k}:{v}" for k, v in facts.tags.items())
    for group_id, group_name in facts.security_groups:
        values.update((f"sg:id:{group_id}", f"sg:name:{group_name}"))
    values.update(f"iamrole:{arn}" for arn in facts.iam_roles)
    try:
        return tuple(Selector(NAME, v) for v in sorted(values))
    except InvalidSelector as exc:
        raise AttestationFailed(f"{NAME}: the instance yields an invalid selector: {exc}") from None
