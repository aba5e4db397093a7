"""spire.api.agent.delegatedidentity.v1.DelegatedIdentity: another workload's SVIDs for a
trusted delegate (a node-local proxy such as a shared Envoy), as in SPIRE.

The delegate is identified exactly as a Workload API caller is (its PID from ``SO_PEERCRED``
at accept, the workload attestors, then a check that it is still that process) and is
authorized when one entry its selectors match has a SPIFFE ID in ``authorized_delegates``.
It then names the workload by selectors, or by PID: that process is pinned (pidfd, start
time, ids) before it is attested and checked again before every message. The delegate's
authorization is checked again before every message of a stream too, so removing its entry
ends its streams. Admin and downstream SVIDs are never handed out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import Message
from grpclib.server import Stream

from plastron.agent.cache import WorkloadCache, WorkloadEntry, WorkloadUpdate
from plastron.agent.workloadapi.callers import CallerAttestation
from plastron.agent.workloadapi.messages import all_bundles, jwt_jwks
from plastron.agent.workloadapi.peertracker import CallerWatcher
from plastron.agent.workloadapi.status import mapped_errors
from plastron.errors import InvalidArgument, NotAuthorized
from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_grpc as grpc_,
)
from plastron.proto.spire.api.agent.delegatedidentity.v1 import (
    delegatedidentity_pb2 as pb,
)
from plastron.proto.spire.api.types import jwtsvid_pb2, selector_pb2, x509svid_pb2
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.jwtsvid import JwtSvid
from plastron.wire.ids import spiffe_id_to_proto
from plastron.wire.limits import check_jwt_audience
from plastron.wire.selectors import selectors_from_proto

log = logging.getLogger("plastron.agent.adminapi")
API = "admin API"
JwtMinter = Callable[[WorkloadEntry, tuple[str, ...]], Awaitable[JwtSvid]]


def x509_svids_response(update: WorkloadUpdate) -> pb.SubscribeToX509SVIDsResponse:
    msg = pb.SubscribeToX509SVIDsResponse(
        federates_with=sorted(str(td.id) for td in update.federated_bundles)
    )
    for ident in update.identities:
        if ident.entry.admin or ident.entry.downstream:
            continue
        chain = ident.svid.chain
        msg.x509_svids.append(
            pb.X509SVIDWithKey(
                x509_svid=x509svid_pb2.X509SVID(
                    id=spiffe_id_to_proto(ident.svid.spiffe_id),
                    cert_chain=[c.public_bytes(Encoding.DER) for c in chain],
                    expires_at=int(chain[0].not_valid_after_utc.timestamp()),
                ),
                x509_svid_key=ident.svid.key_pkcs8_der(),
            )
        )
    return msg


def x509_bundles_response(update: WorkloadUpdate) -> pb.SubscribeToX509BundlesResponse | None:
    if update.bundle is None:
        return None
    msg = pb.SubscribeToX509BundlesResponse()
    for td, bundle in all_bundles(update).items():
        msg.ca_certificates[str(td.id)] = bundle.x509_der()
    return msg


def jwt_bundles_response(update: WorkloadUpdate) -> pb.SubscribeToJWTBundlesResponse | None:
    if update.bundle is None:
        return None
    msg = pb.SubscribeToJWTBundlesResponse()
    for td, bundle in all_bundles(update).items():
        msg.bundles[str(td.id)] = jwt_jwks(bundle)
    return msg


def subject_selectors(msgs: Sequence[selector_pb2.Selector]) -> frozenset[Selector]:
    """The selectors naming the workload; at least one (none would name no workload)."""
    if not msgs:
        raise InvalidArgument("selectors: at least one selector must be given")
    return frozenset(selectors_from_proto(msgs, "selectors"))


async def _request(stream: Stream[Any, Any]) -> Any:
    req = await stream.recv_message()
    if req is None:
        raise InvalidArgument("the call carried no request message")
    return req


class DelegatedIdentityService(grpc_.DelegatedIdentityBase):
    def __init__(
        self,
        cache: WorkloadCache,
        attestation: CallerAttestation,
        authorized_delegates: Collection[SpiffeId],
        jwt_svid: JwtMinter,
    ) -> None:
        self._cache = cache
        self._attestation = attestation
        self._delegates = frozenset(authorized_delegates)
        self._jwt_svid = jwt_svid

    # ---- the delegate ------------------------------------------------------------------------

    def _authorize(self, selectors: frozenset[Selector]) -> None:
        entries = self._cache.matching_entries(selectors)
        if not entries:
            raise NotAuthorized("no identity issued")
        if not any(e.spiffe_id in self._delegates for e in entries):
            log.warning(
                "admin API caller is not an authorized delegate default_id=%s entries=%d",
                entries[0].spiffe_id,
                len(entries),
            )
            raise NotAuthorized("caller not configured as an authorized delegate")

    async def _delegate(
        self, stream: Stream[Any, Any]
    ) -> tuple[CallerWatcher, frozenset[Selector]]:
        caller, selectors = await self._attestation.attest(stream)
        self._authorize(selectors)
        return caller, selectors

    async def _stream(
        self,
        stream: Stream[Any, Any],
        still_valid: Callable[[], None],
        selectors: frozenset[Selector],
        build: Callable[[WorkloadUpdate], Message | None],
    ) -> None:
        """``build`` of the state of the workload ``selectors`` name, now and on each change,
        after ``still_valid()`` passed again (it raises when the delegate lost its right)."""
        last: bytes | None = None
        with self._cache.subscribe(selectors) as sub:
            while True:
                msg = build(await sub.next())
                if msg is None:
                    continue
                data = msg.SerializeToString(deterministic=True)
                if data == last:
                    continue
                still_valid()
                await stream.send_message(msg)
                last = data

    def _recheck(
        self, *processes: CallerWatcher, selectors: frozenset[Selector]
    ) -> Callable[[], None]:
        def check() -> None:
            for process in processes:
                process.check()
            self._authorize(selectors)

        return check

    # ---- methods -----------------------------------------------------------------------------

    async def SubscribeToX509SVIDs(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.SubscribeToX509SVIDs", API):
            caller, own = await self._delegate(stream)
            req = await _request(stream)
            subject = subject_selectors(req.selectors)
            check = self._recheck(caller, selectors=own)
            await self._stream(stream, check, subject, x509_svids_response)

    async def SubscribeToX509SVIDsByPID(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.SubscribeToX509SVIDsByPID", API):
            caller, own = await self._delegate(stream)
            req = await _request(stream)
            process, subject = await self._attestation.attest_pid(req.pid)
            try:
                check = self._recheck(caller, process, selectors=own)
                await self._stream(stream, check, subject, x509_svids_response)
            finally:
                process.close()

    async def SubscribeToX509Bundles(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.SubscribeToX509Bundles", API):
            caller, own = await self._delegate(stream)
            await stream.recv_message()
            check = self._recheck(caller, selectors=own)
            await self._stream(stream, check, frozenset(), x509_bundles_response)

    async def SubscribeToJWTBundles(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.SubscribeToJWTBundles", API):
            caller, own = await self._delegate(stream)
            await stream.recv_message()
            check = self._recheck(caller, selectors=own)
            await self._stream(stream, check, frozenset(), jwt_bundles_response)

    async def FetchJWTSVIDs(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.FetchJWTSVIDs", API):
            caller, own = await self._delegate(stream)
            req = await _request(stream)
            audience = self._audience(req.audience)
            subject = subject_selectors(req.selectors)
            await self._send_jwt_svids(
                stream, self._recheck(caller, selectors=own), subject, audience
            )

    async def FetchJWTSVIDsByPID(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("DelegatedIdentity.FetchJWTSVIDsByPID", API):
            caller, own = await self._delegate(stream)
            req = await _request(stream)
            audience = self._audience(req.audience)
            process, subject = await self._attestation.attest_pid(req.pid)
            try:
                check = self._recheck(caller, process, selectors=own)
                await self._send_jwt_svids(stream, check, subject, audience)
            finally:
                process.close()

    @staticmethod
    def _audience(audience: Sequence[str]) -> tuple[str, ...]:
        if not audience:
            raise InvalidArgument("audience must be specified")
        return check_jwt_audience(list(audience))

    async def _send_jwt_svids(
        self,
        stream: Stream[Any, Any],
        still_valid: Callable[[], None],
        selectors: frozenset[Selector],
        audience: tuple[str, ...],
    ) -> None:
        entries = [
            e for e in self._cache.matching_entries(selectors) if not (e.admin or e.downstream)
        ]
        if not entries:
            raise NotAuthorized("no identity issued")
        response = pb.FetchJWTSVIDsResponse()
        for entry in entries:
            svid = await self._jwt_svid(entry, audience)
            response.svids.append(
                jwtsvid_pb2.JWTSVID(
                    token=svid.token,
                    id=spiffe_id_to_proto(svid.spiffe_id),
                    expires_at=int(svid.expires_at.timestamp()),
                    issued_at=int(svid.issued_at.timestamp()) if svid.issued_at else 0,
                )
            )
        still_valid()
        await stream.send_message(response)
