"""The agent's ``telemetry { Prometheus {} }``: the ``/metrics`` listener, and the gauges read
from the running agent at scrape time (its own SVID's remaining life, the SVIDs it holds, the
health of each subsystem)."""

from __future__ import annotations

from collections.abc import Callable

from plastron.agent.cache import WorkloadCache
from plastron.agent.identity import AgentIdentity
from plastron.agent.metrics import AGENT_SVID_REMAINING, CACHED_SVIDS, REGISTRY, SUBSYSTEM_UP
from plastron.clock import Clock
from plastron.metrics import Telemetry


class AgentTelemetry(Telemetry):
    def start(
        self,
        identity: AgentIdentity,
        cache: WorkloadCache,
        clock: Clock,
        subsystems: Callable[[], dict[str, tuple[bool, str]]],
    ) -> None:
        """``subsystems``: name -> (healthy, detail), called in the scrape thread (it only
        reads)."""
        prometheus = self._config.prometheus
        if prometheus is None:
            return

        def svid_remaining() -> list[tuple[tuple[str, ...], float]]:
            state = identity.state
            if state is None:
                return []
            expires = state.svid_chain[0].not_valid_after_utc
            return [((), (expires - clock.now()).total_seconds())]

        AGENT_SVID_REMAINING.samples = svid_remaining
        CACHED_SVIDS.samples = lambda: [((), float(cache.x509_svid_count))]
        SUBSYSTEM_UP.samples = lambda: [
            ((name,), 1.0 if healthy else 0.0) for name, (healthy, _) in subsystems().items()
        ]
        self._listen(prometheus, REGISTRY)
