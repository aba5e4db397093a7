"""The agent's push listener against real grpclib servers on a Unix socket: one that answers
UNIMPLEMENTED (as a SPIRE server does: the listener stops for good) and one that pushes and
ends its streams (each message wakes the sync loop; an ended stream is opened again)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from plastron.agent.entry_push import EntryPushListener
from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierBase

DEADLINE = 30.0


class Client:
    def __init__(self, path: str) -> None:
        self.path = path
        self.channels: list[Channel] = []

    def channel(self) -> Channel:
        channel = Channel(path=self.path)
        self.channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


class Unimplemented(EntryNotifierBase):
    """A server without the service, answering as a Go gRPC server (SPIRE) does."""

    async def Watch(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "unknown service plastron.entrynotifier.v1")


class PushTwiceThenEnd(EntryNotifierBase):
    """Each stream: two pushes, then the stream ends (as a server restart would end it)."""

    def __init__(self) -> None:
        self.streams = 0

    async def Watch(self, stream: Any) -> None:
        await stream.recv_message()
        self.streams += 1
        for revision in (1, 2):
            await stream.send_message(entrynotifier_pb2.WatchResponse(revision=revision))


async def serve(handlers: list[Any], path: Path) -> Server:
    server = Server(handlers)
    await server.start(path=str(path))
    return server


async def test_a_server_without_the_service_is_not_asked_again(tmp_path: Path) -> None:
    server = await serve([Unimplemented()], tmp_path / "s.sock")
    client = Client(str(tmp_path / "s.sock"))
    wake = asyncio.Event()
    listener = EntryPushListener(client, wake, max_backoff=5.0)
    try:
        await asyncio.wait_for(listener.run(), DEADLINE)  # returns: nothing to retry
        assert listener.supported is False
        assert not wake.is_set()
        assert len(client.channels) == 1
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_pushes_wake_the_sync_and_an_ended_stream_is_reopened(tmp_path: Path) -> None:
    service = PushTwiceThenEnd()
    server = await serve([service], tmp_path / "s.sock")
    client = Client(str(tmp_path / "s.sock"))
    wake = asyncio.Event()
    listener = EntryPushListener(client, wake, max_backoff=1.0)
    task = asyncio.create_task(listener.run())
    try:

        async def reopened() -> None:
            while service.streams < 2 or listener.pushes < 4:
                await asyncio.sleep(0.01)  # polling interval, not a readiness guess

        await asyncio.wait_for(reopened(), DEADLINE)
        assert listener.supported is True
        assert wake.is_set()
    finally:
        task.cancel()
        client.close()
        server.close()
        await server.wait_closed()
