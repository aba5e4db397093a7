"""A small grpclib Workload API client (always sends the security header).

In core because both the agent's CLI and the server's ``spire`` UpstreamAuthority (a nested
server fetching its own X509-SVID from its agent) use it, and the server and the agent never
import each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from grpclib.client import Channel

from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.grpc.health.v1.health_grpc import HealthStub
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub

METADATA = {"workload.spiffe.io": "true"}


class WorkloadClient:
    def __init__(self, socket_path: str, timeout: float | None = 5.0) -> None:
        self._channel = Channel(path=socket_path)
        self._stub = SpiffeWorkloadAPIStub(self._channel)
        self._timeout = timeout

    async def __aenter__(self) -> WorkloadClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._channel.close()

    async def fetch_x509(self) -> pb.X509SVIDResponse:
        async with self._stub.FetchX509SVID.open(
            metadata=METADATA, timeout=self._timeout
        ) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            msg: pb.X509SVIDResponse | None = await stream.recv_message()
            await stream.cancel()
        if msg is None:
            raise ConnectionError("Workload API stream ended without a message")
        return msg

    async def watch_x509(self) -> AsyncIterator[pb.X509SVIDResponse]:
        async with self._stub.FetchX509SVID.open(metadata=METADATA) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            while (msg := await stream.recv_message()) is not None:
                yield msg

    async def fetch_jwt(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse:
        request = pb.JWTSVIDRequest(audience=audience, spiffe_id=spiffe_id)
        response: pb.JWTSVIDResponse = await self._stub.FetchJWTSVID(
            request, metadata=METADATA, timeout=self._timeout
        )
        return response

    async def fetch_jwt_bundles(self) -> pb.JWTBundlesResponse:
        async with self._stub.FetchJWTBundles.open(
            metadata=METADATA, timeout=self._timeout
        ) as stream:
            await stream.send_message(pb.JWTBundlesRequest(), end=True)
            msg: pb.JWTBundlesResponse | None = await stream.recv_message()
            await stream.cancel()
        if msg is None:
            raise ConnectionError("Workload API stream ended without a message")
        return msg

    async def validate_jwt(self, audience: str, token: str) -> pb.ValidateJWTSVIDResponse:
        request = pb.ValidateJWTSVIDRequest(audience=audience, svid=token)
        response: pb.ValidateJWTSVIDResponse = await self._stub.ValidateJWTSVID(
            request, metadata=METADATA, timeout=self._timeout
        )
        return response

    async def health(self) -> Any:
        stub = HealthStub(self._channel)
        return await stub.Check(health_pb2.HealthCheckRequest(), timeout=self._timeout)
