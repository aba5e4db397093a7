"""The server's metrics (served with ``telemetry { Prometheus {} }``; docs/operations.md).

Module-level so any part of the server can count without being handed a registry; they live in
this module's ``REGISTRY``, which only the server's ``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from plastron.metrics import LATENCY_BUCKETS, CallbackGauge, RpcMetrics

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

RPC = RpcMetrics.create("plastron_server", "Server API", REGISTRY)

NODE_ATTESTATIONS = Counter(
    "plastron_server_node_attestations",
    "AttestAgent results, by attestation method and outcome (success, refused, error)",
    ("method", "outcome"),
    registry=REGISTRY,
)
SVIDS_SIGNED = Counter(
    "plastron_server_svids_signed",
    "SVIDs and CA certificates the CA signed, by type "
    "(x509_workload, x509_agent, x509_server, x509_downstream_ca, jwt)",
    ("type",),
    registry=REGISTRY,
)
KEYMANAGER_SIGN = Histogram(
    "plastron_server_keymanager_sign_duration_seconds",
    "Time the KeyManager took for one signing operation (a batch of X509-SVIDs counts once), "
    "by KeyManager plugin and what was signed",
    ("plugin", "type"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CA_EVENTS = Counter(
    "plastron_server_ca_events",
    "CA authority lifecycle events, by kind (x509, jwt) and event (prepared, activated, "
    "tainted, revoked, key_destroyed)",
    ("kind", "event"),
    registry=REGISTRY,
)
CA_ACTIVE_REMAINING = CallbackGauge(
    "plastron_server_ca_active_authority_remaining_seconds",
    "Seconds until the active authority expires, by kind (x509, jwt)",
    ("kind",),
    lambda: (),
)
REGISTRY.register(CA_ACTIVE_REMAINING)
DATASTORE_QUERY = Histogram(
    "plastron_server_datastore_query_duration_seconds",
    "Datastore transaction time (retries included), by operation, read/write and outcome",
    ("op", "kind", "outcome"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENTRY_CACHE_ENTRIES = Gauge(
    "plastron_server_entry_cache_entries",
    "Registration entries in the authorized-entry cache",
    registry=REGISTRY,
)
ENTRY_CACHE_UPDATE = Histogram(
    "plastron_server_entry_cache_update_duration_seconds",
    "Time to update the authorized-entry cache, by kind (rebuild: from scratch; refresh: "
    "the changes since the last update)",
    ("kind",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SUBSYSTEM_UP = CallbackGauge(
    "plastron_server_subsystem_up",
    "1 when the subsystem's last health check passed, else 0 (datastore, ca: the KeyManager, "
    "an HSM's session included)",
    ("subsystem",),
    lambda: (),
)
REGISTRY.register(SUBSYSTEM_UP)
ENTRY_WATCH_STREAMS = Gauge(
    "plastron_server_entry_watch_streams",
    "Open EntryNotifier/Watch streams (agents told at once of entry changes that concern them)",
    registry=REGISTRY,
)
ENTRY_PUSHES = Counter(
    "plastron_server_entry_pushes",
    '"Sync now" messages sent on EntryNotifier/Watch streams',
    registry=REGISTRY,
)
ENTRY_PUSHES_DEFERRED = Counter(
    "plastron_server_entry_pushes_deferred",
    "Entry pushes that waited for the server-wide push budget (server/pushbudget.py)",
    registry=REGISTRY,
)
