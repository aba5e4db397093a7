"""``plastron.entrynotifier.v1.EntryNotifier/Watch`` against a real ``plastron-server run``: who
may open it, what it pushes, and how it ends (ban, eviction, too many streams of one agent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierStub
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.types import status_pb2

from .server_process import TD, Identity, ServerProcess, entry_message, remove_base, short_base

TIMEOUT = 30.0
REASONS = status_pb2.PermissionDeniedDetails


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    base = short_base("pl-push-")
    process = ServerProcess(base)
    try:
        process.start()
        yield process
    finally:
        process.stop()
        remove_base(base)


@pytest.fixture
async def agent(server: ServerProcess) -> AsyncIterator[Identity]:
    yield await server.attest_agent()
    server.close_channels()


class Watch:
    """One open Watch stream; ``next()`` is its next push, ``ended()`` the status it ends with."""

    def __init__(self, channel: Channel) -> None:
        self._ctx = EntryNotifierStub(channel).Watch.open(timeout=TIMEOUT)
        self._stream: Any = None
        self._ended = False

    async def __aenter__(self) -> Watch:
        self._stream = await self._ctx.__aenter__()
        await self._stream.send_message(entrynotifier_pb2.WatchRequest(), end=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._ended:  # the server's streams do not end by themselves
            await self._stream.cancel()
            await self._ctx.__aexit__(None, None, None)

    async def next(self) -> int:
        message = await self._stream.recv_message()
        assert message is not None, "the stream ended instead of pushing"
        return int(message.revision)

    async def ended(self) -> GRPCError:
        self._ended = True
        with pytest.raises(GRPCError) as raised:
            while await self._stream.recv_message() is not None:
                pass
            await self._stream.recv_trailing_metadata()
        return raised.value


def reason(exc: GRPCError) -> int | None:
    for detail in exc.details or ():
        if isinstance(detail, status_pb2.PermissionDeniedDetails):
            return int(detail.reason)
    return None


async def test_an_entry_for_the_agent_is_pushed(server: ServerProcess, agent: Identity) -> None:
    async with Watch(await server.tls(agent)) as watch:
        first = await watch.next()  # at once: the stream is up
        await server.create_entries(entry_message("/pushed", agent.spiffe_id, "unix:uid:0"))
        assert await watch.next() > first


async def test_a_banned_agents_stream_is_closed(server: ServerProcess, agent: Identity) -> None:
    async with Watch(await server.tls(agent)) as watch:
        await watch.next()
        await server.ban(agent.spiffe_id)
        ended = await watch.ended()
    assert ended.status == Status.PERMISSION_DENIED
    assert reason(ended) == REASONS.AGENT_BANNED


async def test_an_evicted_agents_stream_is_closed(server: ServerProcess, agent: Identity) -> None:
    async with Watch(await server.tls(agent)) as watch:
        await watch.next()
        await agent_grpc.AgentStub(server.local()).DeleteAgent(
            agent_pb2.DeleteAgentRequest(id={"trust_domain": TD.name, "path": agent.spiffe_id.path})
        )
        ended = await watch.ended()
    assert ended.status == Status.PERMISSION_DENIED
    assert reason(ended) == REASONS.AGENT_NOT_ATTESTED


async def test_an_agents_third_stream_closes_its_first(
    server: ServerProcess, agent: Identity
) -> None:
    channel = await server.tls(agent)
    async with Watch(channel) as first:
        await first.next()  # registered on the server before the next one opens
        async with Watch(channel) as second, Watch(channel) as third:
            await second.next()
            await third.next()
            ended = await first.ended()
            assert ended.status == Status.RESOURCE_EXHAUSTED
            await server.create_entries(entry_message("/still", agent.spiffe_id, "unix:uid:0"))
            assert await second.next() > 0 and await third.next() > 0


@pytest.mark.parametrize("kind", ["no_client_cert", "workload_svid", "banned_agent"])
async def test_callers_that_are_not_an_active_agent_are_refused(
    server: ServerProcess, kind: str
) -> None:
    identity: Identity | None = None
    if kind == "workload_svid":
        identity = await server.mint("/app/not-an-agent")
    elif kind == "banned_agent":
        identity = await server.attest_agent()
        await server.ban(identity.spiffe_id)
    try:
        async with Watch(await server.tls(identity)) as watch:
            ended = await watch.ended()
        assert ended.status == Status.PERMISSION_DENIED
    finally:
        server.close_channels()
