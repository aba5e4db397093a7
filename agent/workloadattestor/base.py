"""The WorkloadAttestor protocol: selectors for the process that called the Workload API."""

from __future__ import annotations

from typing import Protocol

from plastron.selector import Selector


class WorkloadAttestor(Protocol):
    """Turns a caller's PID into selectors.

    Selectors come only from what the kernel says about the process, never from anything the
    workload sends. A process that disappears during attestation is an error
    (AttestationFailed), never a shorter selector list.
    """

    name: str

    async def attest(self, pid: int) -> list[Selector]: ...
