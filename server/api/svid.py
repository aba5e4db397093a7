"""spire.api.server.svid.v1.SVID."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from grpclib.server import Stream

from plastron.errors import InvalidArgument, NotAuthorized, PlastronError
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.records import RegistrationEntry
from plastron.server.api.authz import current_caller
from plastron.server.api.context import ApiContext
from plastron.server.api.status import item_status, unimplemented
from plastron.server.bundles import load_bundle
from plastron.server.ca.batch_signing import SignedX509Svid, WorkloadCsr
from plastron.server.ca.csr import csr_public_key, csr_uri_and_dns, parse_csr
from plastron.spiffe.bundle import Bundle
from plastron.wire.ids import spiffe_id_from_proto
from plastron.wire.limits import MAX_X509_SVID_BATCH, check_jwt_audience
from plastron.wire.svids import jwt_svid_to_proto, x509_svid_to_proto


class SvidService(svid_grpc.SVIDBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def MintX509SVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        csr = parse_csr(req.csr)
        sid, dns = csr_uri_and_dns(csr)
        if not sid.member_of(self.ctx.trust_domain):
            raise InvalidArgument(
                f"csr: SPIFFE ID {sid} is not a member of trust domain "
                f"{self.ctx.trust_domain.name!r}"
            )
        if req.ttl < 0:
            raise InvalidArgument("ttl: must not be negative")
        chain = await self.ctx.ca.sign_workload_x509_svid(
            spiffe_id=sid,
            public_key=csr_public_key(csr),
            ttl=req.ttl,
            dns_names=dns,
            subject=csr.subject if len(csr.subject) else None,
        )
        await stream.send_message(
            svid_pb2.MintX509SVIDResponse(svid=x509_svid_to_proto(chain, sid))
        )

    async def MintJWTSVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if not req.HasField("id"):
            raise InvalidArgument("id: missing SPIFFE ID")
        sid = spiffe_id_from_proto(req.id, "id")
        if req.ttl < 0:
            raise InvalidArgument("ttl: must not be negative")
        token = await self.ctx.ca.sign_jwt_svid(
            spiffe_id=sid, audience=check_jwt_audience(list(req.audience)), ttl=req.ttl
        )
        await stream.send_message(svid_pb2.MintJWTSVIDResponse(svid=jwt_svid_to_proto(token, sid)))

    async def BatchNewX509SVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if len(req.params) > MAX_X509_SVID_BATCH:
            raise InvalidArgument(
                f"params: batch of {len(req.params)} exceeds {MAX_X509_SVID_BATCH}"
            )
        caller = current_caller()
        agent = caller.agent
        assert agent is not None
        await self.ctx.sign_limiter.wait(caller.host, len(req.params))
        authorized = self.ctx.cache.authorized_entries_by_id(agent.spiffe_id)
        # Every item's Result is added now, in request order, and filled in place as its SVID
        # or refusal comes: no per-item message is built and then copied into the response.
        response = svid_pb2.BatchNewX509SVIDResponse()
        slots: list[tuple[Any, RegistrationEntry]] = []  # (its Result, entry) of each request
        requests: list[WorkloadCsr] = []
        for i, param in enumerate(req.params):
            result = response.results.add()
            try:
                entry = _authorize(param, authorized, i)
            except PlastronError as exc:
                _set_failed(result, exc)
                continue
            slots.append((result, entry))
            requests.append(
                WorkloadCsr(
                    spiffe_id=entry.spiffe_id,
                    csr=param.csr,
                    field=f"params[{i}].csr",
                    ttl=entry.x509_svid_ttl,
                    dns_names=entry.dns_names,
                )
            )
        signing = self.ctx.ca.sign_workload_x509_svids(requests)
        async with contextlib.aclosing(signing):
            slot = iter(slots)
            async for signed in signing:
                result, entry = next(slot)
                _set_batch_result(result, signed, entry)
        assert next(slot, None) is None, "every item gets its own result"
        await stream.send_message(response)

    async def NewJWTSVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        caller = current_caller()
        agent = caller.agent
        assert agent is not None
        if not req.entry_id:
            raise InvalidArgument("entry_id: missing")
        audience = check_jwt_audience(list(req.audience))
        await self.ctx.sign_limiter.wait(caller.host)
        entry = self.ctx.cache.authorized_entry(agent.spiffe_id, req.entry_id)
        if entry is None:
            raise NotAuthorized(f"entry {req.entry_id!r} is not authorized for this agent")
        token = await self.ctx.ca.sign_jwt_svid(
            spiffe_id=entry.spiffe_id, audience=audience, ttl=entry.jwt_svid_ttl
        )
        await stream.send_message(
            svid_pb2.NewJWTSVIDResponse(svid=jwt_svid_to_proto(token, entry.spiffe_id, entry.hint))
        )

    async def NewDownstreamX509CA(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        csr = parse_csr(req.csr)
        # preferred_ttl as SPIRE: 0 means the CA TTL; never past the signing CA's own expiry.
        chain = await self.ctx.ca.sign_downstream_x509_ca(
            csr_public_key=csr_public_key(csr), ttl=req.preferred_ttl
        )
        bundle = await self._bundle()
        await stream.send_message(
            svid_pb2.NewDownstreamX509CAResponse(
                ca_cert_chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
                x509_authorities=[
                    a.certificate.public_bytes(serialization.Encoding.DER)
                    for a in bundle.x509_authorities
                ],
            )
        )

    async def _bundle(self) -> Bundle:
        return await load_bundle(self.ctx.datastore, self.ctx.trust_domain)

    async def MintWITSVID(self, stream: Stream[Any, Any]) -> None:
        await unimplemented(stream, "MintWITSVID")

    async def BatchNewWITSVID(self, stream: Stream[Any, Any]) -> None:
        await unimplemented(stream, "BatchNewWITSVID")


def _authorize(
    param: Any, authorized: Mapping[str, RegistrationEntry], i: int
) -> RegistrationEntry:
    if not param.entry_id:
        raise InvalidArgument(f"params[{i}].entry_id: missing")
    entry = authorized.get(param.entry_id)
    if entry is None:
        raise NotAuthorized(f"params[{i}]: entry {param.entry_id!r} is not authorized")
    return entry


def _set_failed(result: Any, exc: PlastronError) -> None:
    """Fill a ``BatchNewX509SVIDResponse.Result`` with the item's refusal."""
    result.status.SetInParent()
    result.status.code, result.status.message = item_status(exc)


def _set_batch_result(
    result: Any, signed: SignedX509Svid | PlastronError, entry: RegistrationEntry
) -> None:
    """Fill a ``BatchNewX509SVIDResponse.Result`` in place: the same message
    ``x509_svid_der_to_proto`` builds, with an OK status that is present on the wire (SPIRE's
    agent reads ``Status.Code`` without a nil check)."""
    if isinstance(signed, PlastronError):
        _set_failed(result, signed)
        return
    result.status.SetInParent()
    svid = result.svid
    svid.cert_chain.extend(signed.chain)
    svid.id.trust_domain = entry.spiffe_id.trust_domain.name
    svid.id.path = entry.spiffe_id.path
    svid.expires_at = int(signed.not_after.timestamp())
    svid.hint = entry.hint
