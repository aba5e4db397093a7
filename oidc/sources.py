"""Where the JWT authorities come from: the server API (``GetBundle`` on the server's admin
socket) or the Workload API (``FetchJWTBundles`` on an agent's socket), polled every
``poll_interval``, so a JWT key rotation shows in the JWKS within one poll.

A failed poll keeps the last good key set (relying parties keep verifying while the server
restarts) and is logged; readiness turns false once no poll succeeded for the threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from plastron.clock import Clock
from plastron.errors import PlastronError, Unavailable
from plastron.logs import fields
from plastron.oidc.config import ServerApiSource, WorkloadApiSource
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.workload import workload_pb2
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.spiffe.bundle import Bundle
from plastron.wire.bundles import bundle_from_proto

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 10.0
# The header every Workload API call carries (SPIFFE Workload Endpoint spec, §5.1).
WORKLOAD_METADATA = {"workload.spiffe.io": "true"}


async def fetch_from_server_api(source: ServerApiSource) -> Bundle:
    channel = Channel(path=str(source.socket_path))
    try:
        stub = bundle_grpc.BundleStub(channel)
        msg = await stub.GetBundle(bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT_SECONDS)
        return bundle_from_proto(msg)
    finally:
        channel.close()


async def fetch_from_workload_api(source: WorkloadApiSource) -> Bundle:
    channel = Channel(path=str(source.socket_path))
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchJWTBundles.open(
            metadata=WORKLOAD_METADATA, timeout=CALL_TIMEOUT_SECONDS
        ) as stream:
            await stream.send_message(workload_pb2.JWTBundlesRequest(), end=True)
            msg = await stream.recv_message()
            await stream.cancel()
    finally:
        channel.close()
    if msg is None:
        raise Unavailable("the Workload API stream ended without a message")
    td = source.trust_domain
    # Keyed by the trust domain's SPIFFE ID (Workload API spec); a bare name is accepted too.
    jwks = msg.bundles.get(str(td.id), msg.bundles.get(td.name))
    if jwks is None:
        raise Unavailable(f"the Workload API answer has no JWT bundle for {td.name}")
    return Bundle.from_jwks(td, jwks)


class KeySetSource:
    """The latest bundle of the trust domain and when it was last fetched."""

    def __init__(self, config: ServerApiSource | WorkloadApiSource, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self.bundle: Bundle | None = None
        self.last_success: dt.datetime | None = None
        self.last_error = ""
        self._fetch: Callable[[], Awaitable[Bundle]]
        if isinstance(config, ServerApiSource):
            self._fetch = lambda: fetch_from_server_api(config)
            self.describe = f"server API at {config.socket_path}"
        else:
            self._fetch = lambda: fetch_from_workload_api(config)
            self.describe = f"Workload API at {config.socket_path}"

    async def poll_once(self) -> None:
        try:
            bundle = await self._fetch()
        except (
            GRPCError,
            ProtocolError,
            StreamTerminatedError,
            OSError,
            TimeoutError,
            PlastronError,
        ) as exc:
            detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if detail != self.last_error:  # once per distinct failure, not every poll
                log.warning(
                    "cannot fetch the JWT authorities",
                    extra=fields(source=self.describe, error=detail),
                )
            self.last_error = detail
            return
        if self.bundle is None or self.bundle.jwt_keys().keys() != bundle.jwt_keys().keys():
            log.info(
                "JWT authorities updated",
                extra=fields(key_ids=",".join(a.key_id for a in bundle.jwt_authorities)),
            )
        self.bundle = bundle
        self.last_success = self._clock.now()
        self.last_error = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        interval = self._config.poll_interval.total_seconds()
        while not stop.is_set():
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
