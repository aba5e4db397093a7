"""Who is calling on the agent's public socket: one attestation path for every service there.

The Workload API and Envoy SDS share the socket and identify their caller the same way: the
PID from ``SO_PEERCRED`` as recorded when the connection was accepted (see ``peertracker``),
every workload attestor on that PID (selectors unioned), then a check that the process is still
the one that connected. A caller matching no entry gets PermissionDenied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from plastron.agent.cache import WorkloadCache, WorkloadEntry
from plastron.agent.workloadapi.peertracker import CallerTracker, CallerWatcher, watch_pid
from plastron.errors import AttestationFailed, InvalidArgument, NotAuthorized
from plastron.selector import Selector
from plastron.transport.peer import stream_transport
from plastron.workloadattestor import WorkloadAttestor

log = logging.getLogger("plastron.agent.workloadapi")


class CallerAttestation:
    """The socket's connection record (filled by the endpoint at accept) and the attestors."""

    def __init__(self, attestors: Sequence[WorkloadAttestor]) -> None:
        self._attestors = list(attestors)
        self.tracker = CallerTracker()
        """Record of each connection's caller, made at accept by the endpoint serving this."""

    async def attest(self, stream: Any) -> tuple[CallerWatcher, frozenset[Selector]]:
        """The caller's selectors, read after it connected and confirmed to still be its own."""
        try:
            caller = self.tracker.watcher_for(stream_transport(stream))
        except InvalidArgument as exc:
            raise AttestationFailed(f"cannot identify the caller: {exc}") from None
        selectors = await self._attest_pid(caller.pid)
        caller.check()
        return caller, selectors

    async def attest_pid(self, pid: int) -> tuple[CallerWatcher, frozenset[Selector]]:
        """The selectors of the process ``pid`` (named by an admin API caller, not connected),
        with the same check afterwards that it is still the process that was looked at."""
        process = watch_pid(pid)
        try:
            selectors = await self._attest_pid(pid)
            process.check()
        except BaseException:
            process.close()
            raise
        return process, selectors

    async def _attest_pid(self, pid: int) -> frozenset[Selector]:
        results = await asyncio.gather(
            *(a.attest(pid) for a in self._attestors), return_exceptions=True
        )
        selectors: set[Selector] = set()
        for attestor, result in zip(self._attestors, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, AttestationFailed):
                    raise result
                log.error(
                    "workload attestor failed attestor=%s pid=%d",
                    attestor.name,
                    pid,
                    exc_info=result,
                )
                raise AttestationFailed(f"workload attestation failed for pid {pid}")
            selectors.update(result)
        return frozenset(selectors)


def entitled_entries(cache: WorkloadCache, selectors: frozenset[Selector]) -> list[WorkloadEntry]:
    """The entries the caller's selectors match, in the cache's stable order (the first is the
    default identity); NotAuthorized (PermissionDenied) when there are none."""
    entries = cache.matching_entries(selectors)
    if not entries:
        raise NotAuthorized("no identity issued")
    return entries
