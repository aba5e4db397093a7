"""The agent's metrics (served with ``telemetry { Prometheus {} }``; docs/operations.md).

Module-level so any part of the agent can count without being handed a registry; they live in
this module's ``REGISTRY``, which only the agent's ``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from plastron.metrics import LATENCY_BUCKETS, CallbackGauge, RpcMetrics

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

RPC = RpcMetrics.create("plastron_agent", "Workload API, Envoy SDS and health", REGISTRY)

NODE_ATTESTATIONS = Counter(
    "plastron_agent_node_attestations",
    "The agent's own node attestations, by method and outcome (success, error)",
    ("method", "outcome"),
    registry=REGISTRY,
)
SYNCS = Counter(
    "plastron_agent_syncs",
    "Sync rounds with the server (agent SVID rotation, entries, bundles, workload SVIDs), by "
    "outcome (success, error)",
    ("outcome",),
    registry=REGISTRY,
)
SYNC_DURATION = Histogram(
    "plastron_agent_sync_duration_seconds",
    "Duration of a sync round with the server, by outcome",
    ("outcome",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
AGENT_SVID_REMAINING = CallbackGauge(
    "plastron_agent_svid_remaining_seconds",
    "Seconds until the agent's own X509-SVID expires",
    (),
    lambda: (),
)
REGISTRY.register(AGENT_SVID_REMAINING)
CACHED_SVIDS = CallbackGauge(
    "plastron_agent_cached_x509_svids",
    "Workload X509-SVIDs the agent holds",
    (),
    lambda: (),
)
REGISTRY.register(CACHED_SVIDS)
SUBSYSTEM_UP = CallbackGauge(
    "plastron_agent_subsystem_up",
    "1 when the subsystem is healthy, else 0, as /ready reports it (workload_api, agent_svid; "
    "tpm: the last probe of the TPM the agent's plugins use, only when they use one)",
    ("subsystem",),
    lambda: (),
)
REGISTRY.register(SUBSYSTEM_UP)
