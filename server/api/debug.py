"""spire.api.server.debug.v1.Debug and grpc.health.v1.Health."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.proto.spire.api.server.debug.v1 import debug_grpc, debug_pb2
from plastron.server.api.context import ApiContext
from plastron.server.api.status import mapped_errors
from plastron.server.health import HealthChecker
from plastron.spiffe.x509svid import spiffe_id_from_certificate
from plastron.wire.ids import spiffe_id_to_proto


class DebugService(debug_grpc.DebugBase):
    def __init__(self, ctx: ApiContext, server_chain: Callable[[], Sequence[x509.Certificate]]):
        self.ctx = ctx
        self._server_chain = server_chain

    async def GetInfo(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        ds = self.ctx.datastore
        chain = []
        for cert in self._server_chain():
            chain.append(
                debug_pb2.GetInfoResponse.Cert(
                    id=spiffe_id_to_proto(spiffe_id_from_certificate(cert)),
                    expires_at=int(cert.not_valid_after_utc.timestamp()),
                    subject=cert.subject.rfc4514_string(),
                )
            )
        bundles = await ds.count_bundles()
        await stream.send_message(
            debug_pb2.GetInfoResponse(
                svid_chain=chain,
                uptime=int(time.monotonic() - self.ctx.started_at),
                agents_count=await ds.count_attested_nodes(),
                entries_count=await ds.count_entries(),
                federated_bundles_count=max(bundles - 1, 0),
            )
        )


class HealthService(health_grpc.HealthBase):
    """gRPC health: the empty service name is the whole server; subsystems by name."""

    def __init__(self, checker: HealthChecker) -> None:
        self._checker = checker

    async def _status_of(self, service: str) -> Any:
        statuses = await self._checker.statuses()
        if service:
            match = [s for s in statuses if s.name == service]
            if not match:
                raise GRPCError(Status.NOT_FOUND, f"unknown health service {service!r}")
            ok = match[0].healthy
        else:
            ok = all(s.healthy for s in statuses)
        return (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    # Any network peer can call these: a request that is not a valid message (or none at all)
    # is the caller's error, INVALID_ARGUMENT, never grpclib's UNKNOWN with a traceback.
    @staticmethod
    async def _request(stream: Stream[Any, Any]) -> Any:
        async with mapped_errors():
            req = await stream.recv_message()
        if req is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "health: the call carried no request message")
        return req

    async def Check(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        await stream.send_message(
            health_pb2.HealthCheckResponse(status=await self._status_of(req.service))
        )

    async def List(self, stream: Stream[Any, Any]) -> None:
        await self._request(stream)
        resp = health_pb2.HealthListResponse()
        for s in await self._checker.statuses():
            resp.statuses[s.name].status = (
                health_pb2.HealthCheckResponse.SERVING
                if s.healthy
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
        await stream.send_message(resp)

    async def Watch(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        await stream.send_message(
            health_pb2.HealthCheckResponse(status=await self._status_of(req.service))
        )
