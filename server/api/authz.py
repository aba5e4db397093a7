"""Per-method authorization, as SPIRE's default policy.

Every handler is wrapped (``authorized_mapping``) so it runs only after its method's policy
passed; a method without a policy is refused (fail closed). Policies are evaluated cheapest
first:
- ANY: everyone (AttestAgent, GetBundle);
- LOCAL: the call arrived on the admin Unix socket;
- ADMIN: the caller's X509-SVID ID is in ``admin_ids`` or an entry with that ID has admin=true;
- DOWNSTREAM: an entry with the caller's ID has downstream=true;
- AGENT: the caller holds an agent SVID whose serial is the node's current serial, or its new
  serial (which is then promoted: a renewed SVID becomes active on first use); an empty current
  serial means banned. Failures carry SPIRE's PermissionDeniedDetails reason.

ADMIN, DOWNSTREAM and AGENT callers are authorized per call, so an X509-SVID that expires stops
authorizing calls at once, also on a connection opened while it was valid (TLS checks it only
at the handshake).
"""

from __future__ import annotations

import contextvars
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Unpack

from cryptography import x509
from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.datastore import NodeUpdate
from plastron.proto.spire.api.types import status_pb2
from plastron.records import AttestedNode
from plastron.server.api.audit import audited
from plastron.server.api.status import mapped_errors
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.spiffe.ids import SpiffeId
from plastron.transport.peer import PeerInfo, peer_info

log = logging.getLogger(__name__)


class Policy(enum.Flag):
    NONE = 0
    ANY = enum.auto()
    LOCAL = enum.auto()
    ADMIN = enum.auto()
    DOWNSTREAM = enum.auto()
    AGENT = enum.auto()


@dataclass(frozen=True)
class Caller:
    peer: PeerInfo
    local: bool
    spiffe_id: SpiffeId | None
    leaf: x509.Certificate | None
    admin: bool = False
    downstream: bool = False
    agent: AttestedNode | None = None

    @property
    def host(self) -> str:
        """The rate-limit key: the peer's IP, or "local" for the admin socket."""
        return self.peer.address[0] if self.peer.address else "local"


_CURRENT: contextvars.ContextVar[Caller] = contextvars.ContextVar("plastron_caller")


def current_caller() -> Caller:
    """The authorized caller of the RPC being handled."""
    return _CURRENT.get()


class NodeLookup(Protocol):
    async def fetch_attested_node(self, spiffe_id: SpiffeId) -> AttestedNode | None: ...

    async def update_attested_node(
        self, spiffe_id: SpiffeId, **fields: Unpack[NodeUpdate]
    ) -> AttestedNode: ...


def permission_denied(message: str, reason: Any = None) -> GRPCError:
    details = None
    if reason is not None:
        details = [status_pb2.PermissionDeniedDetails(reason=reason)]
    return GRPCError(Status.PERMISSION_DENIED, message, details)


class Authorizer:
    def __init__(
        self,
        *,
        admin_ids: Iterable[SpiffeId],
        cache: AuthorizedEntryCache,
        nodes: NodeLookup,
        clock_now: Callable[[], float],
    ) -> None:
        self._admin_ids = frozenset(admin_ids)
        self._cache = cache
        self._nodes = nodes
        self._now = clock_now

    async def authorize(self, stream: Stream[Any, Any], method: str, policy: Policy) -> Caller:
        peer = peer_info(stream)
        leaf = peer.certificate
        caller = Caller(peer=peer, local=peer.local, spiffe_id=peer.spiffe_id, leaf=leaf)
        if Policy.ANY in policy:
            return caller
        if Policy.LOCAL in policy and caller.local:
            return caller
        sid = caller.spiffe_id
        if sid is not None and not caller.local:
            if Policy.ADMIN in policy and self._is_admin(sid):
                self._require_unexpired(leaf, "admin")
                return Caller(**{**caller.__dict__, "admin": True})
            if Policy.DOWNSTREAM in policy and self._is_downstream(sid):
                self._require_unexpired(leaf, "downstream")
                return Caller(**{**caller.__dict__, "downstream": True})
            if Policy.AGENT in policy and leaf is not None:
                node = await self._authorize_agent(sid, leaf)
                return Caller(**{**caller.__dict__, "agent": node})
        raise permission_denied(f"authorization denied for method {method}")

    def _is_admin(self, sid: SpiffeId) -> bool:
        if sid in self._admin_ids:
            return True
        return any(e.admin for e in self._cache.entries_with_spiffe_id(sid))

    def _is_downstream(self, sid: SpiffeId) -> bool:
        return any(e.downstream for e in self._cache.entries_with_spiffe_id(sid))

    def _require_unexpired(
        self, leaf: x509.Certificate | None, kind: str, reason: Any = None
    ) -> None:
        if leaf is None or leaf.not_valid_after_utc.timestamp() <= self._now():
            raise permission_denied(f"{kind} SVID has expired", reason)

    async def _authorize_agent(self, sid: SpiffeId, leaf: x509.Certificate) -> AttestedNode:
        reasons = status_pb2.PermissionDeniedDetails
        self._require_unexpired(leaf, "agent", reasons.AGENT_EXPIRED)
        serial = str(leaf.serial_number)
        known = self._cache.attested_node(sid)
        if known is not None and known.cert_serial == serial:
            return known  # banned records (empty serial) never match: they are read again
        epoch = self._cache.node_epoch
        node = await self._nodes.fetch_attested_node(sid)
        if node is None:
            raise permission_denied(f"agent {sid} is not attested", reasons.AGENT_NOT_ATTESTED)
        if node.cert_serial == "":
            raise permission_denied(f"agent {sid} is banned", reasons.AGENT_BANNED)
        if serial == node.cert_serial:
            self._cache.remember_node(node, epoch)
            return node
        if node.new_cert_serial and serial == node.new_cert_serial:
            # First use of a renewed SVID activates it (SPIRE semantics); the old one stops
            # authorizing at once.
            self._cache.forget_node(sid)
            return await self._nodes.update_attested_node(
                sid,
                cert_serial=node.new_cert_serial,
                cert_not_after=node.new_cert_not_after,
                new_cert_serial="",
                new_cert_not_after=0,
            )
        raise permission_denied(
            f"agent {sid} presented an SVID that is not active (serial {serial})",
            reasons.AGENT_NOT_ACTIVE,
        )


HandlerFn = Callable[[Stream[Any, Any]], Awaitable[None]]


def authorized_mapping(
    service: Any, policies: Mapping[str, Policy], authorizer: Authorizer, *, audit: bool = False
) -> dict[str, Handler]:
    """The service's grpclib mapping with every handler behind its policy; with ``audit``,
    every call (refused ones too) leaves an audit line."""
    wrapped: dict[str, Handler] = {}
    for path, handler in service.__mapping__().items():
        policy = policies.get(path, Policy.NONE)
        guarded = _guard(handler.func, path, policy, authorizer)
        wrapped[path] = Handler(
            audited(guarded, path) if audit else guarded,
            handler.cardinality,
            handler.request_type,
            handler.reply_type,
        )
    return wrapped


def _guard(func: HandlerFn, path: str, policy: Policy, authorizer: Authorizer) -> HandlerFn:
    async def guarded(stream: Stream[Any, Any]) -> None:
        async with mapped_errors():
            if policy == Policy.NONE:
                raise permission_denied(f"authorization denied for method {path}")
            caller = await authorizer.authorize(stream, path, policy)
            token = _CURRENT.set(caller)
            try:
                await func(stream)
            finally:
                _CURRENT.reset(token)

    return guarded


class AuthorizedService:
    """Adapter so grpclib's Server sees the guarded mapping."""

    def __init__(self, mapping: dict[str, Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping
