"""The NodeAttestor protocols shared by every attestation method.

The server half verifies a payload and may run any number of challenge rounds through the
``challenge`` callback (which sends bytes to the agent and returns its answer; it enforces the
round deadline). The agent half produces the payload and answers challenges.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId

ChallengeFn = Callable[[bytes], Awaitable[bytes]]

# Bound on any single attestation payload or challenge answer (bytes); larger input is refused.
MAX_ATTESTATION_MESSAGE = 64 * 1024


@dataclass(frozen=True)
class AttestationResult:
    agent_id: SpiffeId
    selectors: tuple[Selector, ...] = ()
    can_reattest: bool = False
    # Method-specific facts stored atomically with the node record (e.g. the TPM AK that passed
    # activation); opaque to the core.
    node_data: bytes = field(default=b"", repr=False)


class ServerNodeAttestor(Protocol):
    """Server half of an attestation method."""

    name: str

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult: ...


def attests_unique_nodes(attestor: object) -> bool:
    """False for a method whose agent IDs name no unique machine (a new ID per attestation, as
    aws_iam's): it declares ``unique_nodes = False``. Its agents get the server's short
    ``non_unique_agent_ttl`` SVIDs and their node rows are pruned once those expire."""
    return bool(getattr(attestor, "unique_nodes", True))


class AgentNodeAttestor(Protocol):
    """Agent half of an attestation method."""

    name: str

    async def payload(self) -> bytes: ...

    async def answer(self, challenge: bytes) -> bytes: ...
