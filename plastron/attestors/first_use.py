"""Trust on first use, for methods whose proof any process on the node can obtain (a cloud
instance identity document or token): only the first attestation of an instance is accepted,
until an operator evicts the agent. The server enforces it again, atomically, when it writes the
node record; checking here first gives the method's own message and skips the cloud API calls.
"""

from __future__ import annotations

from plastron.errors import AttestationFailed
from plastron.host_services import AgentAttestedFn
from plastron.spiffe.ids import SpiffeId


async def refuse_if_attested(method: str, agent_id: SpiffeId, attested: AgentAttestedFn) -> None:
    """AttestationFailed (SPIRE's wording, plus the agent ID) if ``agent_id`` has a node."""
    if await attested(agent_id):
        raise AttestationFailed(
            f"{method}: attestation data has already been used to attest an agent ({agent_id}); "
            "evict the agent to attest this instance again"
        )
