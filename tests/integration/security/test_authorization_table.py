"""Who may call what: every method the server serves, called by every kind of caller, through
real sockets of a real ``plastron-server run`` process.

The expected table is SPIRE's default authorization policy (its ``policy_data.json``: allow_any,
allow_local, allow_admin, allow_downstream, allow_agent per method), written here independently
of the product's policy table. The served methods are enumerated from the services the server
registers (their grpclib ``__mapping__``), so a method added without a row here fails
``test_every_served_method_has_a_row``.

A call is "denied" when it ends with PERMISSION_DENIED or UNAUTHENTICATED, and "allowed"
otherwise: requests are empty, so an allowed call usually ends in INVALID_ARGUMENT or
UNIMPLEMENTED from the handler, which proves the authorization layer let it through.
Transport failures and deadlines are neither: they fail the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from h2.exceptions import StreamClosedError

from plastron.server.health import HealthChecker
from plastron.server.services import build_services
from plastron.spiffe.ids import SpiffeId

from .server_process import TD, Identity, ServerProcess, entry_message, remove_base, short_base

ADMIN_BY_CONFIG = TD.spiffe_id("/ops/admin-by-config")
ADMIN_BY_ENTRY = "/ops/admin-by-entry"
DOWNSTREAM = "/nested/downstream"
WORKLOAD = "/app/workload"
ENTRY_PARENT = TD.spiffe_id("/node/parent")
CALL_TIMEOUT = 20.0

# The caller kinds, and which of SPIRE's policy flags each one satisfies.
KINDS: dict[str, frozenset[str]] = {
    "no_client_cert": frozenset(),
    "agent": frozenset({"agent"}),
    "banned_agent": frozenset(),
    "admin_by_admin_ids": frozenset({"admin"}),
    "admin_by_entry": frozenset({"admin"}),
    "downstream": frozenset({"downstream"}),
    "workload_svid": frozenset(),  # a valid SVID with no admin/downstream entry and no node
    "local": frozenset({"local"}),
}

_AGENT = "/spire.api.server.agent.v1.Agent/"
_BUNDLE = "/spire.api.server.bundle.v1.Bundle/"
_DEBUG = "/spire.api.server.debug.v1.Debug/"
_ENTRY = "/spire.api.server.entry.v1.Entry/"
_LOGGER = "/spire.api.server.logger.v1.Logger/"
_SVID = "/spire.api.server.svid.v1.SVID/"
_TD = "/spire.api.server.trustdomain.v1.TrustDomain/"
_LA = "/spire.api.server.localauthority.v1.LocalAuthority/"
_HEALTH = "/grpc.health.v1.Health/"
ADMIN_LOCAL = "admin local"

# SPIRE's default policy, one row per method SPIRE serves (rows for services this server does
# not serve yet are checked as soon as it does).
EXPECTED: dict[str, str] = {
    _AGENT + "CountAgents": ADMIN_LOCAL,
    _AGENT + "ListAgents": ADMIN_LOCAL,
    _AGENT + "GetAgent": ADMIN_LOCAL,
    _AGENT + "DeleteAgent": ADMIN_LOCAL,
    _AGENT + "BanAgent": ADMIN_LOCAL,
    _AGENT + "AttestAgent": "any",
    _AGENT + "RenewAgent": "agent",
    _AGENT + "PostStatus": "agent",
    _AGENT + "CreateJoinToken": ADMIN_LOCAL,
    _BUNDLE + "GetBundle": "any",
    _BUNDLE + "AppendBundle": ADMIN_LOCAL,
    _BUNDLE + "PublishJWTAuthority": "downstream",
    _BUNDLE + "PublishWITAuthority": "downstream",
    _BUNDLE + "CountBundles": ADMIN_LOCAL,
    _BUNDLE + "ListFederatedBundles": ADMIN_LOCAL,
    _BUNDLE + "GetFederatedBundle": "admin local agent",
    _BUNDLE + "BatchCreateFederatedBundle": ADMIN_LOCAL,
    _BUNDLE + "BatchUpdateFederatedBundle": ADMIN_LOCAL,
    _BUNDLE + "BatchSetFederatedBundle": ADMIN_LOCAL,
    _BUNDLE + "BatchDeleteFederatedBundle": ADMIN_LOCAL,
    _DEBUG + "GetInfo": "local",
    _ENTRY + "CountEntries": ADMIN_LOCAL,
    _ENTRY + "ListEntries": ADMIN_LOCAL,
    _ENTRY + "GetEntry": ADMIN_LOCAL,
    _ENTRY + "BatchCreateEntry": ADMIN_LOCAL,
    _ENTRY + "BatchUpdateEntry": ADMIN_LOCAL,
    _ENTRY + "BatchDeleteEntry": ADMIN_LOCAL,
    _ENTRY + "GetAuthorizedEntries": "agent",
    _ENTRY + "SyncAuthorizedEntries": "agent",
    _LOGGER + "GetLogger": "local",
    _LOGGER + "SetLogLevel": "local",
    _LOGGER + "ResetLogLevel": "local",
    _SVID + "MintX509SVID": ADMIN_LOCAL,
    _SVID + "MintJWTSVID": ADMIN_LOCAL,
    _SVID + "MintWITSVID": ADMIN_LOCAL,
    _SVID + "BatchNewX509SVID": "agent",
    _SVID + "NewJWTSVID": "agent",
    _SVID + "BatchNewWITSVID": "agent",
    _SVID + "NewDownstreamX509CA": "downstream",
    _TD + "ListFederationRelationships": ADMIN_LOCAL,
    _TD + "GetFederationRelationship": ADMIN_LOCAL,
    _TD + "BatchCreateFederationRelationship": ADMIN_LOCAL,
    _TD + "BatchUpdateFederationRelationship": ADMIN_LOCAL,
    _TD + "BatchDeleteFederationRelationship": ADMIN_LOCAL,
    _TD + "RefreshBundle": ADMIN_LOCAL,
    **{
        _LA + name: ADMIN_LOCAL
        for name in (
            "GetJWTAuthorityState",
            "PrepareJWTAuthority",
            "ActivateJWTAuthority",
            "TaintJWTAuthority",
            "RevokeJWTAuthority",
            "GetX509AuthorityState",
            "PrepareX509Authority",
            "ActivateX509Authority",
            "TaintX509Authority",
            "TaintX509UpstreamAuthority",
            "RevokeX509Authority",
            "RevokeX509UpstreamAuthority",
            "GetWITAuthorityState",
            "PrepareWITAuthority",
            "ActivateWITAuthority",
            "TaintWITAuthority",
            "RevokeWITAuthority",
        )
    },
    _HEALTH + "Check": "local",
    _HEALTH + "List": "local",
    _HEALTH + "Watch": "local",
    # Plastron's own (not SPIRE's): the entry push asks the agent to call
    # SyncAuthorizedEntries, so it is authorized as that call is.
    "/plastron.entrynotifier.v1.EntryNotifier/Watch": "agent",
}


@dataclass(frozen=True)
class ServedMethod:
    path: str
    cardinality: Cardinality
    request_type: Any
    reply_type: Any


def served_methods() -> list[ServedMethod]:
    """Every method of every service the server registers (the same list on TCP and socket).

    The services only keep their context at construction, so none is needed to list them."""
    services = build_services(cast(Any, None), HealthChecker(), list)
    return [
        ServedMethod(path, h.cardinality, h.request_type, h.reply_type)
        for service in services
        for path, h in service.__mapping__().items()
    ]


def allowed(kind: str, path: str) -> bool:
    flags = set(EXPECTED[path].split())
    return "any" in flags or bool(flags & KINDS[kind])


@dataclass
class Callers:
    server: ServerProcess
    identities: dict[str, Identity]


async def _make_identities(server: ServerProcess) -> dict[str, Identity]:
    agent = await server.attest_agent()
    banned = await server.attest_agent()
    await server.ban(banned.spiffe_id)
    await server.create_entries(
        entry_message(ADMIN_BY_ENTRY, ENTRY_PARENT, "unix:uid:0", admin=True),
        entry_message(DOWNSTREAM, ENTRY_PARENT, "unix:uid:0", downstream=True),
        entry_message(WORKLOAD, ENTRY_PARENT, "unix:uid:0"),
    )
    identities = {
        "agent": agent,
        "banned_agent": banned,
        "admin_by_admin_ids": await server.mint(ADMIN_BY_CONFIG.path),
        "admin_by_entry": await server.mint(ADMIN_BY_ENTRY),
        "downstream": await server.mint(DOWNSTREAM),
        "workload_svid": await server.mint(WORKLOAD),
    }
    server.close_channels()
    return identities


@pytest.fixture(scope="module")
def callers() -> Iterator[Callers]:
    base = short_base("pl-authz-")
    server = ServerProcess(base, extra_server=f'admin_ids = ["{ADMIN_BY_CONFIG}"]')
    try:
        server.start()
        yield Callers(server, asyncio.run(_make_identities(server)))
    finally:
        server.stop()
        remove_base(base)


async def call_status(channel: Channel, method: ServedMethod) -> Status:
    """The status an empty request to ``method`` ends with (OK when a reply arrives first)."""
    try:
        async with channel.request(
            method.path,
            method.cardinality,
            method.request_type,
            method.reply_type,
            timeout=CALL_TIMEOUT,
        ) as stream:
            await stream.send_message(method.request_type(), end=True)
            await stream.recv_message()
            # A reply means the handler ran; a streaming method may not end by itself.
            if method.cardinality.server_streaming:
                with contextlib.suppress(StreamClosedError):  # unless it did end already
                    await stream.cancel()
            return Status.OK
    except GRPCError as exc:
        return exc.status


async def channel_for(callers: Callers, kind: str) -> Channel:
    server = callers.server
    if kind == "local":
        return server.local()
    return await server.tls(callers.identities.get(kind))


def test_every_served_method_has_a_row() -> None:
    served = [m.path for m in served_methods()]
    assert len(served) == len(set(served)), "a method is registered twice"
    missing = sorted(set(served) - set(EXPECTED))
    assert not missing, f"served methods without an authorization row: {missing}"


@pytest.mark.parametrize("kind", list(KINDS))
async def test_authorization_table(callers: Callers, kind: str) -> None:
    channel = await channel_for(callers, kind)
    try:
        wrong: list[str] = []
        for method in served_methods():
            status = await call_status(channel, method)
            assert status != Status.DEADLINE_EXCEEDED, f"{method.path}: no answer as {kind}"
            denied = status in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED)
            if denied == allowed(kind, method.path):
                want = "allowed" if allowed(kind, method.path) else "denied"
                wrong.append(f"{method.path}: expected {want}, got {status.name}")
        assert not wrong, f"authorization as {kind}:\n" + "\n".join(wrong)
    finally:
        callers.server.close_channels()


async def test_identities_are_what_the_table_assumes(callers: Callers) -> None:
    """Guards the table against vacuous passes: each SVID carries the ID its kind stands for."""
    ids = {kind: identity.spiffe_id for kind, identity in callers.identities.items()}
    assert ids["admin_by_admin_ids"] == ADMIN_BY_CONFIG
    assert ids["admin_by_entry"] == TD.spiffe_id(ADMIN_BY_ENTRY)
    assert ids["downstream"] == TD.spiffe_id(DOWNSTREAM)
    assert ids["agent"].path.startswith("/spire/agent/join_token/")
    assert ids["banned_agent"].path.startswith("/spire/agent/join_token/")
    assert ids["agent"] != ids["banned_agent"]
    assert all(isinstance(sid, SpiffeId) for sid in ids.values())
