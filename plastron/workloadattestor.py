"""The WorkloadAttestor plugin protocol: selectors for the process that called the Workload API.

Implementations register with :attr:`plastron.plugins.Registries.workload_attestors`; the agent
builds every configured one and asks each about every caller. ``unix`` is the agent's
(:mod:`plastron.agent.workloadattestor.unix`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from plastron.selector import Selector


@runtime_checkable
class WorkloadAttestor(Protocol):
    """Turns a caller's PID into selectors.

    Selectors come only from what the kernel says about the process, never from anything the
    workload sends. A process that disappears during attestation is an error
    (AttestationFailed), never a shorter selector list.
    """

    name: str

    async def attest(self, pid: int) -> list[Selector]: ...
