"""The agent's admin Unix socket (``admin_socket_path``): Debug, Logger, DelegatedIdentity.

Served only when configured, as in SPIRE. The socket is 0770 (SPIRE's mode) and its
directory, if the agent creates it, 0750; the same socket checks as every other Plastron
socket apply (plastron.transport.uds), and the same bounds as the Workload API socket (small
requests, connections per uid, calls per connection). Debug and Logger answer anyone who can
connect, which the file mode decides; DelegatedIdentity authorizes its caller itself.
Connections are tracked at accept like the Workload API's, so a delegate is identified by
the process that connected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from plastron.agent.adminapi.debug import AgentDebugService, AgentLoggerService
from plastron.agent.adminapi.delegated import DelegatedIdentityService, JwtMinter
from plastron.agent.cache import WorkloadCache
from plastron.agent.config import AgentConfig
from plastron.agent.workloadapi.callers import CallerAttestation
from plastron.log_levels import LogLevelControl
from plastron.transport.limits import SMALL_MESSAGE_BYTES, GrpcLimits, MessageLimits
from plastron.transport.server import RunningServer, start_server
from plastron.workloadattestor import WorkloadAttestor

ADMIN_SOCKET_MODE = 0o770
ADMIN_DIR_MODE = 0o750


@dataclass(frozen=True)
class AdminSources:
    """What the admin services read from the running agent."""

    cache: WorkloadCache
    attestors: Sequence[WorkloadAttestor]
    agent_chain: Callable[[], Sequence[x509.Certificate]]
    last_sync_success: Callable[[], float | None]
    jwt_svid: JwtMinter


async def start_admin_endpoint(
    config: AgentConfig, sources: AdminSources, instrument: Callable[[Any], Any]
) -> RunningServer | None:
    """Serve the admin API on ``config.admin_socket_path``; None when it is not configured."""
    if config.admin_socket_path is None:
        return None
    attestation = CallerAttestation(sources.attestors)
    handlers = [
        AgentDebugService(sources.cache, sources.agent_chain, sources.last_sync_success),
        AgentLoggerService(LogLevelControl()),
        DelegatedIdentityService(
            sources.cache, attestation, config.authorized_delegates, sources.jwt_svid
        ),
    ]
    return await start_server(
        [instrument(h) for h in handlers],
        uds_path=str(config.admin_socket_path),
        uds_mode=ADMIN_SOCKET_MODE,
        uds_dir_mode=ADMIN_DIR_MODE,
        limits=GrpcLimits(
            connections=config.grpc_limits,
            messages=MessageLimits(default=SMALL_MESSAGE_BYTES),
        ),
        uds_observer=attestation.tracker,
    )
