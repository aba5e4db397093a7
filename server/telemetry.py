"""The server's ``telemetry { Prometheus {} }``: the ``/metrics`` listener, and the gauges read
from the running server at scrape time (the active authorities' remaining life, the last
health check of each subsystem)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from plastron.clock import Clock
from plastron.metrics import Telemetry
from plastron.server.ca.server_ca import ServerCA
from plastron.server.health import HealthChecker
from plastron.server.metrics import CA_ACTIVE_REMAINING, REGISTRY, SUBSYSTEM_UP

Labelled = Iterable[tuple[tuple[str, ...], float]]


def ca_remaining(ca: Callable[[], ServerCA | None], clock: Clock) -> Callable[[], Labelled]:
    def samples() -> Labelled:
        server_ca = ca()
        if server_ca is None:
            return []
        now = clock.now()
        out = []
        x509_ca, jwt_key = server_ca.manager.current_x509, server_ca.manager.current_jwt
        if x509_ca is not None:
            out.append((("x509",), (x509_ca.not_after - now).total_seconds()))
        if jwt_key is not None:
            out.append((("jwt",), (jwt_key.not_after - now).total_seconds()))
        return out

    return samples


def subsystems_up(health: HealthChecker) -> Callable[[], Labelled]:
    def samples() -> Labelled:
        return [((s.name,), 1.0 if s.healthy else 0.0) for s in health.last_statuses()]

    return samples


class ServerTelemetry(Telemetry):
    @property
    def enabled(self) -> bool:
        return self._config.prometheus is not None

    def start(self, ca: Callable[[], ServerCA | None], health: HealthChecker, clock: Clock) -> None:
        prometheus = self._config.prometheus
        if prometheus is None:
            return
        CA_ACTIVE_REMAINING.samples = ca_remaining(ca, clock)
        SUBSYSTEM_UP.samples = subsystems_up(health)
        self._listen(prometheus, REGISTRY)
