"""spire.api.server.localauthority.v1.LocalAuthority: the operator's CA authority controls.

Which authority each call may name follows SPIRE's service: only the *next* slot's authority
can be activated (when PREPARED), tainted or revoked (when OLD), never the active one; revoke
needs a tainted authority. The status codes are SPIRE's, except where SPIRE answers INTERNAL
for a request that names an authority in the wrong state: that is FAILED_PRECONDITION here (the
caller's request is refused, the server is fine). Every change runs under the CA lock, so it
never interleaves with a rotation tick.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.errors import FailedPrecondition, InvalidArgument, PlastronError, Unavailable
from plastron.proto.spire.api.server.localauthority.v1 import (
    localauthority_grpc,
)
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as la
from plastron.server import bundles
from plastron.server.api.context import ApiContext
from plastron.server.ca.authorities import AuthorityManager
from plastron.server.ca.journal import AuthorityStatus
from plastron.server.ca.slots import X509CA, JwtKey

log = logging.getLogger(__name__)
WIT_UNIMPLEMENTED = "WIT-SVID functionality is not yet implemented"


def x509_state(ca: X509CA) -> la.AuthorityState:
    return la.AuthorityState(
        authority_id=ca.authority_id,
        expires_at=int(ca.not_after.timestamp()),
        upstream_authority_subject_key_id=ca.upstream_authority_id,
    )


def jwt_state(key: JwtKey) -> la.AuthorityState:
    return la.AuthorityState(authority_id=key.kid, expires_at=int(key.not_after.timestamp()))


@contextmanager
def _prefixing(what: str, kind: type[PlastronError] = PlastronError) -> Iterator[None]:
    """A ``kind`` error raised inside, raised again with SPIRE's "failed to …" prefix ``what``,
    keeping its type (and so its code)."""
    try:
        yield
    except kind as exc:
        raise type(exc)(f"{what}: {exc}") from exc


def _check_next(
    authority_id: str,
    current_id: str,
    nxt: X509CA | JwtKey | None,
    *,
    verb: str,
    wanted: AuthorityStatus,
) -> X509CA | JwtKey:
    """The next slot's authority when it is ``authority_id`` in status ``wanted``."""
    if not authority_id:
        raise InvalidArgument("no authority ID provided")
    if authority_id == current_id and verb != "activate":
        raise InvalidArgument(f"unable to {verb} current local authority {authority_id}")
    next_id = _authority_id(nxt)
    if nxt is None or authority_id != next_id:
        held = f"the next authority is {next_id}" if next_id else "there is no next authority"
        raise InvalidArgument(f"unexpected authority ID {authority_id!r}: {held}")
    if nxt.status is not wanted:
        # SPIRE: INVALID_ARGUMENT for taint/revoke, INTERNAL for activate (a refusal here).
        kind = FailedPrecondition if wanted is AuthorityStatus.PREPARED else InvalidArgument
        raise kind(
            f"only {wanted.value.capitalize()} local authorities can be {verb}d; "
            f"{authority_id} is {nxt.status.value}"
        )
    return nxt


def _authority_id(held: X509CA | JwtKey | None) -> str:
    if held is None:
        return ""
    return held.authority_id if isinstance(held, X509CA) else held.kid


A = TypeVar("A", X509CA, JwtKey)


@dataclass(frozen=True)
class _Kind(Generic[A]):
    """How the calls that are the same for X.509 and JWT authorities reach one kind's slots."""

    name: str
    state: Callable[[A], la.AuthorityState]
    current: Callable[[AuthorityManager], A | None]
    next: Callable[[AuthorityManager], A | None]
    prepare: Callable[[AuthorityManager], Awaitable[A]]
    activate: Callable[[AuthorityManager], Awaitable[A]]


_X509 = _Kind[X509CA](
    "X.509",
    x509_state,
    lambda m: m.current_x509,
    lambda m: m.next_x509,
    lambda m: m.prepare_x509(),
    lambda m: m.activate_x509(),
)
_JWT = _Kind[JwtKey](
    "JWT",
    jwt_state,
    lambda m: m.current_jwt,
    lambda m: m.next_jwt,
    lambda m: m.prepare_jwt(),
    lambda m: m.activate_jwt(),
)


class LocalAuthorityService(localauthority_grpc.LocalAuthorityBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    @property
    def _manager(self) -> AuthorityManager:
        return self.ctx.ca.manager

    @staticmethod
    async def _request(stream: Stream[Any, Any]) -> Any:
        req = await stream.recv_message()
        assert req is not None
        return req

    async def _after_change(self) -> None:
        """Let the server move its own SVID off a tainted or revoked authority now; a failure
        here is not the operator's (the change is made) and the periodic check retries."""
        try:
            await self.ctx.on_authorities_change()
        except PlastronError as exc:
            log.warning("server SVID not renewed after an authority change error=%s", exc)

    def _current(self, kind: _Kind[A]) -> A:
        current = kind.current(self._manager)
        if current is None:
            raise Unavailable(f"server is initializing: no active {kind.name} authority yet")
        return current

    # -- get, prepare and activate: the same steps for both kinds of authority -------------

    async def _get_state(self, stream: Stream[Any, Any], kind: _Kind[A], reply: Any) -> None:
        await self._request(stream)
        resp = reply(active=kind.state(self._current(kind)))
        nxt = kind.next(self._manager)
        if nxt is not None and nxt.status is AuthorityStatus.PREPARED:
            resp.prepared.CopyFrom(kind.state(nxt))
        elif nxt is not None and nxt.status is AuthorityStatus.OLD:
            resp.old.CopyFrom(kind.state(nxt))
        await stream.send_message(resp)

    async def _prepare(self, stream: Stream[Any, Any], kind: _Kind[A], reply: Any) -> None:
        await self._request(stream)
        async with self._manager.lock:
            self._current(kind)
            with _prefixing(f"failed to prepare {kind.name} authority"):
                prepared = await kind.prepare(self._manager)
        await stream.send_message(reply(prepared_authority=kind.state(prepared)))

    async def _activate(self, stream: Stream[Any, Any], kind: _Kind[A], reply: Any) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            m = self._manager
            _check_next(
                req.authority_id,
                _authority_id(kind.current(m)),
                kind.next(m),
                verb="activate",
                wanted=AuthorityStatus.PREPARED,
            )
            active = await kind.activate(m)
        await stream.send_message(reply(activated_authority=kind.state(active)))

    # -- X.509 ---------------------------------------------------------------------------

    async def GetX509AuthorityState(self, stream: Stream[Any, Any]) -> None:
        await self._get_state(stream, _X509, la.GetX509AuthorityStateResponse)

    async def PrepareX509Authority(self, stream: Stream[Any, Any]) -> None:
        await self._prepare(stream, _X509, la.PrepareX509AuthorityResponse)

    async def ActivateX509Authority(self, stream: Stream[Any, Any]) -> None:
        await self._activate(stream, _X509, la.ActivateX509AuthorityResponse)

    def _old_local_x509(self, authority_id: str, verb: str) -> X509CA:
        m = self._manager
        if m.has_upstream:
            raise FailedPrecondition(
                f"local authority can't be {verb}d if there is an upstream authority "
                f"(use {verb.capitalize()}X509UpstreamAuthority)"
            )
        held = _check_next(
            authority_id,
            _authority_id(m.current_x509),
            m.next_x509,
            verb=verb,
            wanted=AuthorityStatus.OLD,
        )
        assert isinstance(held, X509CA)
        return held

    async def TaintX509Authority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            old = self._old_local_x509(req.authority_id, "taint")
            with _prefixing("failed to taint X.509 authority"):
                await self._manager.taint_x509(old.authority_id)
        await self._after_change()
        await stream.send_message(la.TaintX509AuthorityResponse(tainted_authority=x509_state(old)))

    async def RevokeX509Authority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            with _prefixing("invalid authority ID", InvalidArgument):
                old = self._old_local_x509(req.authority_id, "revoke")
            with _prefixing("failed to revoke X.509 authority"):
                await self._manager.revoke_x509(old.authority_id, old)
        await self._after_change()
        await stream.send_message(
            la.RevokeX509AuthorityResponse(
                revoked_authority=la.AuthorityState(authority_id=old.authority_id)
            )
        )

    def _old_upstream(self, subject_key_id: str) -> tuple[str, X509CA]:
        """The normalised SKID and the OLD local CA that upstream authority signed."""
        m = self._manager
        if not m.has_upstream:
            raise FailedPrecondition("upstream authority is not configured")
        skid = subject_key_id.lower()
        if not skid:
            raise InvalidArgument("no subject key ID provided")
        current = m.current_x509
        if current is not None and skid == current.upstream_authority_id:
            raise InvalidArgument(
                f"unable to use upstream authority {skid} signing the current authority"
            )
        nxt = m.next_x509
        if nxt is None or skid != nxt.upstream_authority_id:
            raise InvalidArgument(f"upstream authority {skid} didn't sign the old local authority")
        if nxt.status is not AuthorityStatus.OLD:
            raise InvalidArgument(
                f"only upstream authorities signing an old authority can be used; "
                f"{nxt.authority_id} is {nxt.status.value}"
            )
        return skid, nxt

    async def TaintX509UpstreamAuthority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            with _prefixing("provided subject key id is not valid", InvalidArgument):
                skid, _ = self._old_upstream(req.subject_key_id)
            with _prefixing("failed to taint upstream authority"):
                await self._manager.taint_x509(skid)
        await self._after_change()
        await stream.send_message(
            la.TaintX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=skid)
        )

    async def RevokeX509UpstreamAuthority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            with _prefixing("invalid subject key ID", InvalidArgument):
                skid, old = self._old_upstream(req.subject_key_id)
            with _prefixing("failed to revoke X.509 upstream authority"):
                await self._manager.revoke_x509(skid, old)
        await self._after_change()
        await stream.send_message(
            la.RevokeX509UpstreamAuthorityResponse(upstream_authority_subject_key_id=skid)
        )

    # -- JWT -----------------------------------------------------------------------------

    async def GetJWTAuthorityState(self, stream: Stream[Any, Any]) -> None:
        await self._get_state(stream, _JWT, la.GetJWTAuthorityStateResponse)

    async def PrepareJWTAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._prepare(stream, _JWT, la.PrepareJWTAuthorityResponse)

    async def ActivateJWTAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._activate(stream, _JWT, la.ActivateJWTAuthorityResponse)

    async def TaintJWTAuthority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            m = self._manager
            _check_next(
                req.authority_id,
                _authority_id(m.current_jwt),
                m.next_jwt,
                verb="taint",
                wanted=AuthorityStatus.OLD,
            )
            with _prefixing("failed to taint JWT authority"):
                await m.taint_jwt(req.authority_id)
        await stream.send_message(
            la.TaintJWTAuthorityResponse(
                tainted_authority=la.AuthorityState(authority_id=req.authority_id)
            )
        )

    async def RevokeJWTAuthority(self, stream: Stream[Any, Any]) -> None:
        req = await self._request(stream)
        async with self._manager.lock:
            with _prefixing("invalid authority ID", InvalidArgument):
                retired = await self._revocable_jwt(req.authority_id)
            with _prefixing("failed to revoke JWT authority"):
                await self._manager.revoke_jwt(req.authority_id, retired)
        await stream.send_message(
            la.RevokeJWTAuthorityResponse(
                revoked_authority=la.AuthorityState(authority_id=req.authority_id)
            )
        )

    async def _revocable_jwt(self, kid: str) -> JwtKey | None:
        """The slot key to destroy with ``kid``: the OLD next key, or None for a key of the
        bundle no slot holds any more (SPIRE lets either be revoked)."""
        m = self._manager
        if not kid:
            raise InvalidArgument("no authority ID provided")
        nxt = m.next_jwt
        if nxt is not None and kid == nxt.kid:
            if nxt.status is AuthorityStatus.PREPARED:
                raise InvalidArgument(f"unable to use a prepared key ({kid})")
            return nxt
        if kid == _authority_id(m.current_jwt):
            raise InvalidArgument(f"unable to use current authority {kid}")
        bundle = await bundles.load_bundle(self.ctx.datastore, self.ctx.trust_domain)
        if kid not in bundle.jwt_keys():
            raise InvalidArgument(f"no JWT authority found with provided authority ID {kid!r}")
        return None

    # -- WIT-SVIDs (not offered, as in SPIRE) ----------------------------------------------

    async def _wit(self, stream: Stream[Any, Any]) -> None:
        await self._request(stream)
        raise GRPCError(Status.UNIMPLEMENTED, WIT_UNIMPLEMENTED)

    async def GetWITAuthorityState(self, stream: Stream[Any, Any]) -> None:
        await self._wit(stream)

    async def PrepareWITAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._wit(stream)

    async def ActivateWITAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._wit(stream)

    async def TaintWITAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._wit(stream)

    async def RevokeWITAuthority(self, stream: Stream[Any, Any]) -> None:
        await self._wit(stream)
