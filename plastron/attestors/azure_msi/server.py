"""The server half of ``azure_msi``: the payload is SPIRE's ``{"token": "<MSI token>"}``. The
token's (unverified) tenant picks the tenant configuration — a tenant not configured is refused
— then the token is verified for that tenant's resource, the agent ID is built from the
template, an instance already attested is refused (trust on first use, as SPIRE: any process
on the VM can get the token), and the selectors come from Resource Manager.

Selectors: ``subscription-id:``, ``resource-group:``, ``vm-name:<rg>:<name>``,
``network-security-group:<rg>:<name>``, ``virtual-network:<rg>:<vnet>``,
``virtual-network-subnet:<rg>:<vnet>:<subnet>``.
"""

from __future__ import annotations

from collections.abc import Mapping

from plastron.attestors.azure_msi.arm import ArmClient
from plastron.attestors.azure_msi.config import AzureMsiServerConfig, template_values
from plastron.attestors.azure_msi.token import NAME, verify
from plastron.attestors.base import MAX_ATTESTATION_MESSAGE, AttestationResult, ChallengeFn
from plastron.attestors.jwks import peek_claims
from plastron.attestors.jwks_source import KeySource
from plastron.attestors.token_attestor import TokenServerAttestor
from plastron.clock import Clock
from plastron.errors import AttestationFailed, InvalidArgument, InvalidSelector
from plastron.host_services import AgentAttestedFn
from plastron.selector import Selector
from plastron.spiffe.ids import TrustDomain
from plastron.strict_json import load_untrusted_object


def decode_payload(payload: bytes) -> str:
    doc = load_untrusted_object(
        payload, limit=MAX_ATTESTATION_MESSAGE, what=f"{NAME}: payload", error=InvalidArgument
    )
    unknown = sorted(set(doc) - {"token"})
    if unknown:
        raise InvalidArgument(f"{NAME}: payload has unknown key {unknown[0][:64]!r}")
    token = doc.get("token")
    if not isinstance(token, str) or not token:
        raise InvalidArgument(f"{NAME}: payload has no token")
    return token


class AzureMsiServerAttestor(TokenServerAttestor):
    name = NAME

    def __init__(
        self,
        config: AzureMsiServerConfig,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        keys: KeySource,
        attested: AgentAttestedFn,
        clients: Mapping[str, ArmClient],
    ) -> None:
        super().__init__(trust_domain, clock, keys=keys, attested=attested)
        self._config = config
        self._clients = clients

    def __repr__(self) -> str:
        return (
            f"AzureMsiServerAttestor(tenants={sorted(self._config.tenants)}, keys={self._keys!r})"
        )

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        token = decode_payload(payload)
        claimed = peek_claims(token, method=NAME).get("tid")
        tenant = self._config.tenants.get(claimed.lower()) if isinstance(claimed, str) else None
        if tenant is None:
            raise AttestationFailed(f"{NAME}: tenant {str(claimed)[:100]!r} is not authorized")
        proved = verify(
            token,
            keys=await self._key_set(token),
            audience=tenant.resource_id,
            tenant=tenant.tenant_id,
            now=self._clock.now(),
        )
        agent_id = await self._first_use(self._config.agent_path_template, template_values(proved))
        values = await self._clients[tenant.tenant_id.lower()].selectors(proved.principal_id)
        try:
            selectors = tuple(Selector(NAME, v) for v in values)
        except InvalidSelector as exc:
            raise AttestationFailed(f"{NAME}: the VM yields an invalid selector: {exc}") from None
        return AttestationResult(agent_id=agent_id, selectors=selectors, can_reattest=False)
