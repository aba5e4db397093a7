"""spire.api.server.svid.v1.SVID."""

from __future__ import annotations

import functools
from typing import Any

from cryptography.hazmat.primitives import serialization
from grpclib.server import Stream

from plastron.errors import InvalidArgument, NotAuthorized, PlastronError
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import jwtsvid_pb2
from plastron.server.api import convert
from plastron.server.api.authz import current_caller
from plastron.server.api.context import ApiContext
from plastron.server.api.csr import csr_public_key, csr_uri_and_dns, parse_csr
from plastron.server.api.csr_check import CheckedKey
from plastron.server.api.status import unimplemented
from plastron.server.bundles import load_bundle
from plastron.server.ca.server_ca import LeafPlan, WorkloadSvidRequest
from plastron.server.datastore.records import RegistrationEntry
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.jwtsvid import parse_jwt_svid_insecure
from plastron.spiffe.limits import check_jwt_audience

MAX_BATCH = 500


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
            svid_pb2.MintX509SVIDResponse(svid=convert.x509_svid_to_proto(chain, sid))
        )

    async def MintJWTSVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if not req.HasField("id"):
            raise InvalidArgument("id: missing SPIFFE ID")
        sid = convert.spiffe_id_from_proto(req.id, "id")
        if req.ttl < 0:
            raise InvalidArgument("ttl: must not be negative")
        token = await self.ctx.ca.sign_jwt_svid(
            spiffe_id=sid, audience=check_jwt_audience(list(req.audience)), ttl=req.ttl
        )
        await stream.send_message(svid_pb2.MintJWTSVIDResponse(svid=_jwt_proto(token, sid)))

    async def BatchNewX509SVID(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if len(req.params) > MAX_BATCH:
            raise InvalidArgument(f"params: batch of {len(req.params)} exceeds {MAX_BATCH}")
        caller = current_caller()
        agent = caller.agent
        assert agent is not None
        await self.ctx.sign_limiter.wait(caller.host, len(req.params))
        authorized = {e.entry_id: e for e in self.ctx.cache.authorized_entries(agent.spiffe_id)}
        results: list[svid_pb2.BatchNewX509SVIDResponse.Result | None] = []
        pending: list[tuple[int, RegistrationEntry]] = []
        csrs: list[tuple[bytes, str]] = []
        for i, param in enumerate(req.params):
            try:
                pending.append((i, _authorize(param, authorized, i)))
                csrs.append((param.csr, f"params[{i}].csr"))
                results.append(None)
            except PlastronError as exc:
                results.append(_failed(exc))
        # The CSR contributes its public key only; SANs and subject come from the entry.
        if not await self._sign_in_workers(pending, csrs, results):
            await self._check_and_sign_here(pending, csrs, results)
        answered = [r for r in results if r is not None]
        assert len(answered) == len(results), "every item gets its own result"
        await stream.send_message(svid_pb2.BatchNewX509SVIDResponse(results=answered))

    async def _check_and_sign_here(
        self,
        pending: list[tuple[int, RegistrationEntry]],
        csrs: list[tuple[bytes, str]],
        results: list[svid_pb2.BatchNewX509SVIDResponse.Result | None],
    ) -> None:
        # Chunk k is signed while the CSR checkers work on chunk k+1.
        checking = self.ctx.csr_checker.check(csrs)
        try:
            done = 0
            for chunk in checking:
                keys = await chunk
                await self._sign_chunk(pending[done : done + len(keys)], keys, results)
                done += len(keys)
        finally:
            for chunk in checking:
                chunk.close()  # the coroutines not reached (a no-op for the others)

    async def _sign_in_workers(
        self,
        pending: list[tuple[int, RegistrationEntry]],
        csrs: list[tuple[bytes, str]],
        results: list[svid_pb2.BatchNewX509SVIDResponse.Result | None],
    ) -> bool:
        """Check and sign in the CSR workers when they can reach the CA key themselves (an
        HSM); False, with nothing done, when they cannot."""
        checker = self.ctx.csr_checker
        if not checker.signs(len(csrs)):
            return False
        batch = self.ctx.ca.plan_workload_x509_svids(
            [(e.spiffe_id, e.x509_svid_ttl, e.dns_names) for _, e in pending]
        )
        planned: list[tuple[int, RegistrationEntry, LeafPlan]] = []
        planned_csrs: list[tuple[bytes, str]] = []
        for (i, entry), plan, item in zip(pending, batch.leaves, csrs, strict=True):
            if isinstance(plan, PlastronError):
                results[i] = _failed(plan)
            else:
                planned.append((i, entry, plan))
                planned_csrs.append(item)
        signing = checker.sign(
            planned_csrs,
            batch,
            [plan for *_, plan in planned],
            functools.partial(self.ctx.ca.sign_planned, batch),
        )
        tail = [convert.ca_der(cert) for cert in batch.chain_tail]
        try:
            done = 0
            for chunk in signing:
                leaves = await chunk
                for (i, entry, plan), leaf in zip(
                    planned[done : done + len(leaves)], leaves, strict=True
                ):
                    results[i] = (
                        _failed(leaf)
                        if isinstance(leaf, PlastronError)
                        else svid_pb2.BatchNewX509SVIDResponse.Result(
                            status=convert.status(None),
                            svid=convert.x509_svid_der_to_proto(
                                [leaf, *tail], entry.spiffe_id, plan.not_after, entry.hint
                            ),
                        )
                    )
                done += len(leaves)
        finally:
            for chunk in signing:
                chunk.close()
        return True

    async def _sign_chunk(
        self,
        entries: list[tuple[int, RegistrationEntry]],
        keys: list[CheckedKey],
        results: list[svid_pb2.BatchNewX509SVIDResponse.Result | None],
    ) -> None:
        requests: list[tuple[int, RegistrationEntry, WorkloadSvidRequest]] = []
        for (i, entry), key in zip(entries, keys, strict=True):
            if isinstance(key, PlastronError):
                results[i] = _failed(key)
                continue
            request = WorkloadSvidRequest(
                spiffe_id=entry.spiffe_id,
                public_key=key,
                ttl=entry.x509_svid_ttl,
                dns_names=entry.dns_names,
            )
            requests.append((i, entry, request))
        signed = await self.ctx.ca.sign_workload_x509_svids([r for _, _, r in requests])
        for (i, entry, _), chain in zip(requests, signed, strict=True):
            if isinstance(chain, PlastronError):
                results[i] = _failed(chain)
            else:
                results[i] = svid_pb2.BatchNewX509SVIDResponse.Result(
                    status=convert.status(None),
                    svid=convert.x509_svid_to_proto(chain, entry.spiffe_id, entry.hint),
                )

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
            svid_pb2.NewJWTSVIDResponse(svid=_jwt_proto(token, entry.spiffe_id, entry.hint))
        )

    async def NewDownstreamX509CA(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        csr = parse_csr(req.csr)
        chain = await self.ctx.ca.sign_downstream_x509_ca(csr_public_key=csr_public_key(csr))
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


def _authorize(param: Any, authorized: dict[str, RegistrationEntry], i: int) -> RegistrationEntry:
    if not param.entry_id:
        raise InvalidArgument(f"params[{i}].entry_id: missing")
    entry = authorized.get(param.entry_id)
    if entry is None:
        raise NotAuthorized(f"params[{i}]: entry {param.entry_id!r} is not authorized")
    return entry


def _failed(exc: PlastronError) -> svid_pb2.BatchNewX509SVIDResponse.Result:
    return svid_pb2.BatchNewX509SVIDResponse.Result(status=convert.status(exc))


def _jwt_proto(token: str, sid: SpiffeId, hint: str = "") -> jwtsvid_pb2.JWTSVID:
    parsed = parse_jwt_svid_insecure(token)
    return jwtsvid_pb2.JWTSVID(
        token=token,
        id=convert.spiffe_id_to_proto(sid),
        expires_at=int(parsed.expires_at.timestamp()),
        issued_at=int(parsed.issued_at.timestamp()) if parsed.issued_at else 0,
        hint=hint,
    )
