"""Trust on first use, for methods whose proof any process on the node can obtain (a cloud
instance identity document or token): only the first attestation of an instance is accepted,
until an operator evicts the agent. The server enforces it again, atomically, when it writes the
node record; checking here first gives the method's own message and skips the cloud API calls.
"""

from __future__ import annotations

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.host_services import AgentAttestedFn
from plastron.plugins import PluginContext
from plastron.spiffe.ids import SpiffeId, TrustDomain


def first_use_host(
    plugin: PluginConfig, context: PluginContext
) -> tuple[TrustDomain, AgentAttestedFn]:
    """What a first-use server attestor is built with from its host: the trust domain and the
    lookup of attested agents; ConfigError when the host does not offer them (not a server)."""
    attested = context.services.agent_attested
    if context.trust_domain is None or attested is None:
        raise ConfigError(
            f"{plugin.path}: the server attestor needs the trust domain and the agent store"
        )
    return context.trust_domain, attested


async def refuse_if_attested(method: str, agent_id: SpiffeId, attested: AgentAttestedFn) -> None:
    """AttestationFailed (SPIRE's wording, plus the agent ID) if ``agent_id`` has a node."""
    if await attested(agent_id):
        raise AttestationFailed(
            f"{method}: attestation data has already been used to attest an agent ({agent_id}); "
            "evict the agent to attest this instance again"
        )
