"""``telemetry {}`` (server and agent): SPIRE's block, of which Plastron serves Prometheus.

``telemetry { Prometheus { host = "localhost" port = 9988 } }`` serves ``/metrics``. SPIRE's
other sinks and its metric filters are refused by name, never accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from plastron.configs.block import Block
from plastron.configs.unsupported import refuse_unsupported
from plastron.errors import ConfigError

# SPIRE's telemetry keys that Plastron does not implement: other sinks, and the name/label
# filters (every Plastron metric is always exported).
TELEMETRY_UNSUPPORTED = (
    "AllowedLabels",
    "AllowedPrefixes",
    "BlockedLabels",
    "BlockedPrefixes",
    "DogStatsd",
    "EnableHostnameLabel",
    "InMem",
    "M3",
    "MetricPrefix",
    "Statsd",
)


@dataclass(frozen=True)
class PrometheusConfig:
    port: int
    host: str = "localhost"  # SPIRE's default: scrapes from this host only


@dataclass(frozen=True)
class TelemetryConfig:
    prometheus: PrometheusConfig | None = None


def read_telemetry(block: Block) -> TelemetryConfig:
    refuse_unsupported(block, TELEMETRY_UNSUPPORTED)
    prometheus = None
    if block.has("Prometheus"):
        p = block.block("Prometheus")
        if not p.has("port"):
            raise ConfigError(f"{p.where('port')} is required")
        prometheus = PrometheusConfig(
            host=p.string("host", PrometheusConfig.host), port=p.integer("port", 0, 1, 65535)
        )
        p.finish()
    block.finish()
    return TelemetryConfig(prometheus=prometheus)
