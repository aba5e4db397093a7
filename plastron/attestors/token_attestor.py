"""What the server halves of the signed-token methods (``azure_msi``, ``gcp_iit``) share: the
key source a token is verified with, and trust on first use of the agent ID the template
builds (any process on the VM can get the token, so only an instance's first attestation is
accepted; see :mod:`plastron.attestors.first_use`)."""

from __future__ import annotations

from plastron.attestors.first_use import refuse_if_attested
from plastron.attestors.jwks import KeySet, header_kid
from plastron.attestors.jwks_source import KeySource
from plastron.attestors.template import PathTemplate, TemplateValues
from plastron.clock import Clock
from plastron.host_services import AgentAttestedFn
from plastron.spiffe.ids import SpiffeId, TrustDomain


class TokenServerAttestor:
    name: str

    def __init__(
        self,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        keys: KeySource,
        attested: AgentAttestedFn,
    ) -> None:
        self._td = trust_domain
        self._clock = clock
        self._keys = keys
        self._attested = attested

    async def _key_set(self, token: str) -> KeySet:
        """A key set holding the key the token's (unverified) header names, if published."""
        return await self._keys.get(header_kid(token))

    async def _first_use(self, template: PathTemplate, values: TemplateValues) -> SpiffeId:
        """The agent ID ``template`` builds; AttestationFailed if it has attested already."""
        agent_id = template.agent_id(self._td, values)
        await refuse_if_attested(self.name, agent_id, self._attested)
        return agent_id
