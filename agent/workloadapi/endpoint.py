"""The agent's public Unix socket: Workload API, Envoy SDS and gRPC health.

Like SPIRE, the socket's directory is 0755 and the socket 0777 so any local user can connect;
who the caller is comes from the kernel (SO_PEERCRED), not from file permissions, and is
recorded when the connection is accepted (see ``peertracker``), not when a request arrives.
Any local user can send it bytes, so every request is limited to 80 KiB (1 MiB for SDS), and
calls per connection, connections per uid and the wait for the first message are bounded as on
the server (plastron.transport.bounded).
"""

from __future__ import annotations

from typing import Any

from plastron.agent.sds.grpc_binding import DELTA_SECRETS, FETCH_SECRETS, STREAM_SECRETS
from plastron.agent.workloadapi.peertracker import CallerTracker
from plastron.agent.workloadapi.status import mapped_errors
from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.grpc.health.v1.health_grpc import HealthBase
from plastron.transport.limits import (
    SMALL_MESSAGE_BYTES,
    ConnectionLimits,
    GrpcLimits,
    MessageLimits,
    MiB,
)
from plastron.transport.server import RunningServer, start_server


class AgentHealth(HealthBase):
    """gRPC health for ``plastron-agent healthcheck``: SERVING while the agent is ready."""

    def __init__(self) -> None:
        self.serving = True

    def _status(self) -> health_pb2.HealthCheckResponse:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)

    # Any local user can call these: a request that is not a valid message gets
    # INVALID_ARGUMENT like every Workload API method, not grpclib's UNKNOWN and a traceback.
    async def Check(self, stream: Any) -> None:
        async with mapped_errors("Health.Check"):
            await stream.recv_message()
        await stream.send_message(self._status())

    async def List(self, stream: Any) -> None:
        async with mapped_errors("Health.List"):
            await stream.recv_message()
        response = health_pb2.HealthListResponse()
        response.statuses[""].CopyFrom(self._status())
        await stream.send_message(response)

    async def Watch(self, stream: Any) -> None:
        async with mapped_errors("Health.Watch"):
            await stream.recv_message()
        await stream.send_message(self._status())


# Envoy's SDS requests carry its Node description (build, metadata and every extension it was
# built with: tens of KiB) on each stream's first message.
SDS_MESSAGE_BYTES = 1 * MiB


def workload_api_limits(connections: ConnectionLimits | None = None) -> GrpcLimits:
    """Any local user can send requests here: Workload API ones are small, SDS ones bounded."""
    sds = dict.fromkeys((DELTA_SECRETS, STREAM_SECRETS, FETCH_SECRETS), SDS_MESSAGE_BYTES)
    return GrpcLimits(
        connections=connections or ConnectionLimits(),
        messages=MessageLimits(default=SMALL_MESSAGE_BYTES, per_method=sds),
    )


async def start_endpoint(
    path: str,
    handlers: list[Any],
    callers: CallerTracker,
    *,
    connections: ConnectionLimits | None = None,
) -> RunningServer:
    """Serve ``handlers`` on the Unix socket at ``path``, each connection's caller recorded in
    ``callers`` when accepted; stop with ``await running.close()``.

    The socket is 0777 (callers are identified by SO_PEERCRED, not by mode bits); its directory
    is created 0755 if missing, never changed if not, and refused if another user could swap
    the socket (plastron.transport.uds). The connection record is made by the bounded server's
    per-connection protocol (plastron.transport.bounded); if a grpclib upgrade bypassed it, no
    connection would be tracked and every Workload API call would be refused (fails closed),
    which the endpoint tests catch.
    """
    return await start_server(
        handlers,
        uds_path=path,
        uds_mode=0o777,
        uds_dir_mode=0o755,
        limits=workload_api_limits(connections),
        uds_observer=callers,
    )
