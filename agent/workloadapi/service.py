"""The grpclib ``SpiffeWorkloadAPI`` service.

Every call: the ``workload.spiffe.io: true`` header (else InvalidArgument), then the caller's
identity as every service on the socket gets it (``callers``: the PID from ``SO_PEERCRED`` as
recorded when its connection was accepted, every workload attestor on that PID, then a check
that the process is still the one that connected), then the cache. A caller matching no entry,
or no longer the process that connected, gets PermissionDenied. Streams send the full current
state at once and again on every change; identical states are not re-sent, and the caller is
checked again before each message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.cache import WorkloadCache, WorkloadEntry, WorkloadUpdate
from plastron.agent.workloadapi import messages
from plastron.agent.workloadapi.callers import CallerAttestation, entitled_entries
from plastron.agent.workloadapi.encoded import ResponseMemo
from plastron.agent.workloadapi.peertracker import CallerWatcher
from plastron.agent.workloadapi.status import mapped_errors
from plastron.clock import Clock
from plastron.errors import InvalidArgument, InvalidSvid, NotAuthorized
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIBase
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.jwtsvid import (
    MAX_TOKEN_BYTES,
    JwtSvid,
    parse_jwt_svid_insecure,
    validate_jwt_svid,
)
from plastron.transport.codec import Encoded
from plastron.wire.limits import check_jwt_audience
from plastron.workloadattestor import WorkloadAttestor

log = logging.getLogger("plastron.agent.workloadapi")

HEADER = "workload.spiffe.io"


class JwtSvidSource(Protocol):
    """Where the agent gets new JWT-SVIDs (the server's NewJWTSVID)."""

    async def new_jwt_svid(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> JwtSvid: ...


@dataclass(frozen=True)
class _Stream:
    """A streaming method: its name, response type and response for a state (None: none
    yet)."""

    method: str
    message_type: type[Message]
    build: Callable[[WorkloadUpdate], Message | None]


_X509_SVIDS = _Stream(
    "FetchX509SVID",
    pb.X509SVIDResponse,
    lambda u: messages.x509_svid_response(u) if u.identities else None,
)
_X509_BUNDLES = _Stream(
    "FetchX509Bundles",
    pb.X509BundlesResponse,
    lambda u: messages.x509_bundles_response(u) if u.bundle is not None else None,
)
_JWT_BUNDLES = _Stream(
    "FetchJWTBundles",
    pb.JWTBundlesResponse,
    lambda u: messages.jwt_bundles_response(u) if u.bundle is not None else None,
)


class WorkloadAPIService(SpiffeWorkloadAPIBase):
    def __init__(
        self,
        cache: WorkloadCache,
        attestors: Sequence[WorkloadAttestor],
        clock: Clock,
        jwt_source: JwtSvidSource | None = None,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._jwt_source = jwt_source
        self.attestation = CallerAttestation(attestors)
        """Caller identification, shared with the other services on the socket (Envoy SDS)."""
        self.callers = self.attestation.tracker
        self._responses = ResponseMemo()
        """Each distinct state's response, encoded once for every stream in that state."""
        """Record of each connection's caller, made at accept by the endpoint serving this."""

    # ---- caller identification -------------------------------------------------------------

    async def _attest_caller(self, stream: Any) -> tuple[CallerWatcher, frozenset[Selector]]:
        """The security header, then the caller's selectors (see ``callers``)."""
        if stream.metadata.get(HEADER) != "true":
            raise InvalidArgument(f"security header missing from request ({HEADER}: true)")
        return await self.attestation.attest(stream)

    def _require_entries(self, selectors: frozenset[Selector]) -> list[WorkloadEntry]:
        return entitled_entries(self._cache, selectors)

    async def _stream_state(
        self, stream: Any, caller: CallerWatcher, selectors: frozenset[Selector], how: _Stream
    ) -> None:
        """Send ``how.build(update)`` now and on each change until the caller leaves, or is no
        longer the process that connected (the stream then ends PermissionDenied)."""
        last: bytes | None = None
        with self._cache.subscribe(selectors) as sub:
            while True:
                update = await sub.next()
                self._require_entries(selectors)
                data = self._responses.encoded(how.method, update, how.build)
                if data is None:  # entitled, but nothing minted yet: wait for the sync
                    continue
                if data != last:
                    caller.check()
                    await stream.send_message(Encoded(data, how.message_type))
                    last = data

    # ---- methods ---------------------------------------------------------------------------

    async def _serve_stream(self, stream: Any, how: _Stream) -> None:
        """The three streaming methods: attest the caller, then stream ``how.build`` of its
        state (``None``: nothing to send yet)."""
        async with mapped_errors(how.method):
            caller, selectors = await self._attest_caller(stream)
            await stream.recv_message()
            self._require_entries(selectors)
            await self._stream_state(stream, caller, selectors, how)

    async def FetchX509SVID(self, stream: Any) -> None:
        await self._serve_stream(stream, _X509_SVIDS)

    async def FetchX509Bundles(self, stream: Any) -> None:
        await self._serve_stream(stream, _X509_BUNDLES)

    async def FetchJWTBundles(self, stream: Any) -> None:
        await self._serve_stream(stream, _JWT_BUNDLES)

    async def FetchJWTSVID(self, stream: Any) -> None:
        async with mapped_errors("FetchJWTSVID"):
            _, selectors = await self._attest_caller(stream)
            request: pb.JWTSVIDRequest = await stream.recv_message()
            audience = check_jwt_audience(list(request.audience))
            entries = self._require_entries(selectors)
            if request.spiffe_id:
                wanted = SpiffeId.parse(request.spiffe_id)
                entries = [e for e in entries if e.spiffe_id == wanted]
                if not entries:
                    raise NotAuthorized(f"no identity issued for {wanted}")
            response = pb.JWTSVIDResponse()
            seen_hints: set[str] = set()
            for entry in entries:
                if entry.hint and entry.hint in seen_hints:
                    continue
                seen_hints.add(entry.hint)
                svid = await self.jwt_svid(entry, audience)
                response.svids.append(
                    pb.JWTSVID(spiffe_id=str(svid.spiffe_id), svid=svid.token, hint=entry.hint)
                )
            await stream.send_message(response)

    async def jwt_svid(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> JwtSvid:
        """A JWT-SVID for ``entry`` (cached, else minted); also used by DelegatedIdentity."""
        cached = self._cache.jwt_svid(entry.entry_id, audience)
        if cached is not None:
            return cached
        if self._jwt_source is None:
            raise GRPCError(Status.UNAVAILABLE, "JWT-SVIDs cannot be minted: no server connection")
        svid = await self._jwt_source.new_jwt_svid(entry, audience)
        self._cache.set_jwt_svid(entry.entry_id, audience, svid)
        return svid

    async def ValidateJWTSVID(self, stream: Any) -> None:
        async with mapped_errors("ValidateJWTSVID"):
            _, selectors = await self._attest_caller(stream)
            request: pb.ValidateJWTSVIDRequest = await stream.recv_message()
            if not request.audience:
                raise InvalidArgument("audience must be specified")
            if not request.svid:
                raise InvalidArgument("svid must be specified")
            if len(request.svid) > MAX_TOKEN_BYTES:
                raise InvalidArgument(f"svid is longer than {MAX_TOKEN_BYTES} bytes")
            self._require_entries(selectors)
            update = self._cache.update_for(selectors)
            # Only to pick the trust domain's keys; the signature is checked next.
            subject = parse_jwt_svid_insecure(request.svid).spiffe_id
            bundle = messages.all_bundles(update).get(subject.trust_domain)
            if bundle is None:
                raise InvalidSvid(f"no keys found for trust domain {subject.trust_domain}")
            svid = validate_jwt_svid(
                request.svid,
                audience=request.audience,
                authorities=bundle.jwt_keys(),
                now=self._clock.now(),
            )
            await stream.send_message(
                pb.ValidateJWTSVIDResponse(
                    spiffe_id=str(svid.spiffe_id), claims=messages.claims_struct(svid.claims)
                )
            )

    async def FetchWITSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")

    async def FetchWITBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")
