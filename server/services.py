"""The set of gRPC services the server exposes (the same on TCP and on the admin socket)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509

from plastron.log_levels import LogLevelControl
from plastron.server.api.agent import AgentService
from plastron.server.api.bundle import BundleService
from plastron.server.api.context import ApiContext
from plastron.server.api.debug import DebugService, HealthService
from plastron.server.api.entry import EntryService
from plastron.server.api.entrynotifier import WATCH, WATCH_REQUEST_BYTES, EntryNotifierService
from plastron.server.api.localauthority import LocalAuthorityService
from plastron.server.api.logger import LoggerService
from plastron.server.api.svid import SvidService
from plastron.server.api.trustdomain import TrustDomainService
from plastron.server.health import HealthChecker
from plastron.transport.limits import (
    SMALL_MESSAGE_BYTES,
    ConnectionLimits,
    GrpcLimits,
    MessageLimits,
)

ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"


def server_grpc_limits(connections: ConnectionLimits) -> GrpcLimits:
    """gRPC's 4 MiB per request message, except AttestAgent: anyone may call it, and its rounds
    (payload, challenge answers) are small; and EntryNotifier/Watch, whose request is empty."""
    return GrpcLimits(
        connections=connections,
        messages=MessageLimits(
            per_method={ATTEST_AGENT: SMALL_MESSAGE_BYTES, WATCH: WATCH_REQUEST_BYTES}
        ),
    )


def build_services(
    ctx: ApiContext,
    health: HealthChecker,
    server_chain: Callable[[], Sequence[x509.Certificate]],
    log_levels: LogLevelControl | None = None,
) -> list[Any]:
    """``log_levels`` defaults to the process's logging as configured at start."""
    return [
        AgentService(ctx),
        BundleService(ctx),
        EntryService(ctx),
        EntryNotifierService(ctx),
        LocalAuthorityService(ctx),
        SvidService(ctx),
        TrustDomainService(ctx),
        DebugService(ctx, server_chain),
        LoggerService(log_levels or LogLevelControl()),
        HealthService(health),
    ]
