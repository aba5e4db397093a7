"""The agent's public Unix socket: Workload API + gRPC health.

Like SPIRE, the socket's directory is 0755 and the socket 0777 so any local user can connect;
who the caller is comes from the kernel (SO_PEERCRED), not from file permissions, and is
recorded when the connection is accepted (see ``peertracker``), not when a request arrives.
"""

from __future__ import annotations

from asyncio import BaseTransport
from typing import Any

from grpclib.protocol import H2Protocol
from grpclib.server import Server

from plastron.agent.workloadapi.peertracker import CallerTracker
from plastron.agent.workloadapi.status import mapped_errors
from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.grpc.health.v1.health_grpc import HealthBase
from plastron.transport.uds import bind_unix_socket


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


class _CallerTrackingProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol, telling ``callers`` of each connection made and lost."""

    def __init__(self, protocol: H2Protocol, callers: CallerTracker) -> None:
        super().__init__(protocol.handler, protocol.config, protocol.h2_config)
        self._callers = callers
        self._transport: BaseTransport | None = None

    def connection_made(self, transport: BaseTransport) -> None:
        self._transport = transport
        self._callers.connection_made(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self._transport is not None:
                self._callers.connection_lost(self._transport)


class _CallerTrackingServer(Server):
    """A grpclib Server whose connections are registered with a CallerTracker at accept.

    grpclib (0.4) makes each connection's protocol in ``Server._protocol_factory``, its one
    per-accept hook; if a grpclib upgrade bypasses it, no connection is tracked and every
    Workload API call is refused (fails closed), which the endpoint tests catch.
    """

    def __init__(self, handlers: list[Any], callers: CallerTracker) -> None:
        super().__init__(handlers)
        self._callers = callers

    def _protocol_factory(self) -> H2Protocol:
        return _CallerTrackingProtocol(super()._protocol_factory(), self._callers)


async def start_endpoint(path: str, handlers: list[Any], callers: CallerTracker) -> Server:
    """Serve ``handlers`` on the Unix socket at ``path``, each connection's caller recorded
    in ``callers`` when accepted; close with server.close()."""
    # 0777: callers are identified by SO_PEERCRED, not by mode bits. The directory is created
    # 0755 if missing, never changed if not, and refused if another user could swap the socket.
    sock = bind_unix_socket(path, mode=0o777, dir_mode=0o755)
    server = _CallerTrackingServer(handlers, callers)
    try:
        await server.start(sock=sock)
    except BaseException:
        sock.close()
        raise
    return server
