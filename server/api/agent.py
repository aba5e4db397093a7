"""spire.api.server.agent.v1.Agent."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from typing import Any

from google.protobuf import empty_pb2
from grpclib.server import Stream

from plastron.attestors.join_token import check_token_shape
from plastron.errors import AttestationFailed, InvalidArgument, NotFound
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.types import jointoken_pb2, status_pb2
from plastron.records import JoinToken
from plastron.server.api.attest import attest_agent
from plastron.server.api.authz import current_caller, permission_denied
from plastron.server.api.context import ApiContext
from plastron.server.api.entry import _MATCH
from plastron.server.ca.csr import csr_public_key, parse_csr
from plastron.spiffe.ids import SpiffeId
from plastron.wire.entries import agent_to_proto
from plastron.wire.ids import spiffe_id_from_proto
from plastron.wire.limits import check_page_size
from plastron.wire.selectors import selectors_from_proto
from plastron.wire.svids import x509_svid_to_proto

log = logging.getLogger(__name__)

MAX_AGENT_VERSION = 255
MAX_JOIN_TOKEN_TTL = 10 * 365 * 24 * 3600


def agent_filters(flt: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if flt.by_attestation_type:
        out["by_attestation_type"] = flt.by_attestation_type
    if flt.HasField("by_selector_match"):
        sels = selectors_from_proto(flt.by_selector_match.selectors, "filter.by_selector_match")
        if not sels:
            raise InvalidArgument("filter.by_selector_match: at least one selector is required")
        out["by_selectors"] = (sels, _MATCH[flt.by_selector_match.match])
    if flt.HasField("by_banned"):
        out["by_banned"] = flt.by_banned.value
    if flt.HasField("by_can_reattest"):
        out["by_can_reattest"] = flt.by_can_reattest.value
    if flt.by_expires_before:
        out["by_expires_before"] = parse_expires_before(flt.by_expires_before)
    return out


def parse_expires_before(text: str) -> int:
    """SPIRE's wire layout (Go ``"2006-01-02 15:04:05 -0700 -07"``), RFC 3339, or Unix seconds."""
    if text.isdigit():
        return int(text)
    parts = text.split(" ")
    candidates = [text]
    if len(parts) >= 3:
        candidates.append(" ".join(parts[:3]))  # drop Go's trailing zone abbreviation
    for candidate in candidates:
        for layout in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                return int(dt.datetime.strptime(candidate, layout).timestamp())
            except ValueError:
                continue
    raise InvalidArgument(
        f"filter.by_expires_before: {text!r} is not a time "
        '(expected "YYYY-MM-DD hh:mm:ss -0700 -07", RFC 3339, or Unix seconds)'
    )


class AgentService(agent_grpc.AgentBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _agent_id(self, req: Any) -> SpiffeId:
        if not req.HasField("id"):
            raise InvalidArgument("id: missing agent ID")
        sid = spiffe_id_from_proto(req.id, "id")
        if not sid.member_of(self.ctx.trust_domain):
            raise InvalidArgument(
                f"id: {sid} is not a member of trust domain {self.ctx.trust_domain}"
            )
        if not sid.path.startswith("/spire/agent/"):
            raise InvalidArgument(f"id: {sid} is not an agent ID (expected /spire/agent/…)")
        return sid

    async def CountAgents(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        filters = agent_filters(req.filter) if req.HasField("filter") else {}
        count = await self.ctx.datastore.count_attested_nodes(**filters)
        await stream.send_message(agent_pb2.CountAgentsResponse(count=count))

    async def ListAgents(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        check_page_size(req.page_size)
        filters = agent_filters(req.filter) if req.HasField("filter") else {}
        nodes, token = await self.ctx.datastore.list_attested_nodes(
            **filters, page_size=req.page_size, page_token=req.page_token
        )
        mask = req.output_mask if req.HasField("output_mask") else None
        await stream.send_message(
            agent_pb2.ListAgentsResponse(
                agents=[agent_to_proto(n, mask) for n in nodes], next_page_token=token
            )
        )

    async def GetAgent(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        sid = self._agent_id(req)
        node = await self.ctx.datastore.fetch_attested_node(sid)
        if node is None:
            raise NotFound(f"agent {sid} not found")
        mask = req.output_mask if req.HasField("output_mask") else None
        await stream.send_message(agent_to_proto(node, mask))

    async def DeleteAgent(self, stream: Stream[Any, Any]) -> None:
        """Evict: the node record goes; the agent may attest again if its method allows."""
        req = await stream.recv_message()
        assert req is not None
        sid = self._agent_id(req)
        await self.ctx.datastore.delete_attested_node(sid)
        await self.ctx.on_change()
        log.info("agent evicted agent_id=%s", sid)
        await stream.send_message(empty_pb2.Empty())

    async def BanAgent(self, stream: Stream[Any, Any]) -> None:
        """Ban: the record stays with empty serials, refusing the SVID and re-attestation."""
        req = await stream.recv_message()
        assert req is not None
        sid = self._agent_id(req)
        if await self.ctx.datastore.fetch_attested_node(sid) is None:
            raise NotFound(f"agent {sid} not found")
        await self.ctx.datastore.update_attested_node(
            sid, cert_serial="", new_cert_serial="", new_cert_not_after=0
        )
        await self.ctx.on_change()
        log.info("agent banned agent_id=%s", sid)
        await stream.send_message(empty_pb2.Empty())

    async def AttestAgent(self, stream: Stream[Any, Any]) -> None:
        await attest_agent(self.ctx, stream)

    async def RenewAgent(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        caller = current_caller()
        node = caller.agent
        assert node is not None
        if node.can_reattest:
            raise permission_denied(
                "agent must re-attest to renew its SVID",
                status_pb2.PermissionDeniedDetails.AGENT_MUST_REATTEST,
            )
        await self.ctx.sign_limiter.wait(caller.host)
        if not req.HasField("params"):
            raise InvalidArgument("params: missing")
        csr = parse_csr(req.params.csr, "params.csr")
        chain = await self.ctx.ca.sign_agent_x509_svid(
            spiffe_id=node.spiffe_id, public_key=csr_public_key(csr, "params.csr")
        )
        leaf = chain[0]
        await self.ctx.datastore.update_attested_node(
            node.spiffe_id,
            new_cert_serial=str(leaf.serial_number),
            new_cert_not_after=int(leaf.not_valid_after_utc.timestamp()),
        )
        await stream.send_message(
            agent_pb2.RenewAgentResponse(svid=x509_svid_to_proto(chain, node.spiffe_id))
        )

    async def CreateJoinToken(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if req.ttl <= 0:
            raise InvalidArgument("ttl: a positive TTL in seconds is required")
        if req.ttl > MAX_JOIN_TOKEN_TTL:
            raise InvalidArgument(f"ttl: {req.ttl} exceeds the maximum of {MAX_JOIN_TOKEN_TTL}")
        token = req.token or str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        try:
            check_token_shape(token)
        except AttestationFailed as exc:
            raise InvalidArgument(f"token: {str(exc).removeprefix('join_token: ')}") from None
        alias = self._join_token_alias(req) if req.HasField("agent_id") else None
        expires_at = self.ctx.now_unix() + req.ttl
        # The alias entry is made when the token is used (datastore join_token_store.py): its
        # parent ID contains the token, which must not sit in the entry tables meanwhile.
        await self.ctx.datastore.create_join_token(JoinToken(token, expires_at, alias))
        await stream.send_message(jointoken_pb2.JoinToken(value=token, expires_at=expires_at))

    def _join_token_alias(self, req: Any) -> SpiffeId:
        target = spiffe_id_from_proto(req.agent_id, "agent_id")
        if not target.member_of(self.ctx.trust_domain):
            raise InvalidArgument(
                f"agent_id: {target} is not in trust domain {self.ctx.trust_domain}"
            )
        if not target.path:
            raise InvalidArgument("agent_id: must have a path")
        if target.is_reserved():
            # As SPIRE: the alias entry names a workload ID, never a server or agent ID.
            raise InvalidArgument(f"agent_id: {target} is in the reserved /spire namespace")
        return target

    async def PostStatus(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        node = current_caller().agent
        assert node is not None
        if len(req.agent_version) > MAX_AGENT_VERSION:
            raise InvalidArgument(f"agent_version: longer than {MAX_AGENT_VERSION} characters")
        await self.ctx.datastore.update_attested_node(
            node.spiffe_id, agent_version=req.agent_version
        )
        await stream.send_message(agent_pb2.PostStatusResponse())
