"""The agent's end of the server's entry push (``plastron.entrynotifier.v1.EntryNotifier/Watch``).

One long-lived stream on the agent's server connection; every message from it wakes the sync
loop at once, so an entry created on the server reaches the workload without waiting for the
next ``sync_interval``. The sync itself is SPIRE's Entry API as always, and the loop keeps its
interval as the fallback: a push lost with a dropped connection is caught up by the next poll
(and by the message every new stream starts with). A server that answers UNIMPLEMENTED (SPIRE)
is not asked again until the agent restarts; any other end of the stream (a restart of the
server, a rotated agent SVID, which replaces the connection) is followed by a reconnect after a
backoff that doubles up to ``max_backoff`` and starts over after a stream that delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.server_client import TRANSPORT_ERRORS
from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierStub

log = logging.getLogger("plastron.agent.entry_push")

MIN_BACKOFF = 0.5
_STREAM_ERRORS: tuple[type[Exception], ...] = (GRPCError, ConnectionError, *TRANSPORT_ERRORS)


class ChannelSource(Protocol):
    """The agent's ServerClient: its current channel to the server (rebuilt on a new SVID)."""

    def channel(self) -> Channel: ...


class EntryPushListener:
    def __init__(self, client: ChannelSource, wake: asyncio.Event, max_backoff: float) -> None:
        self._client = client
        self._wake = wake
        self._max_backoff = max(max_backoff, MIN_BACKOFF)
        self.supported: bool | None = None
        """None until the server answered; False once it said UNIMPLEMENTED."""
        self.pushes = 0
        self._delivered = False

    async def run(self) -> None:
        """Keep one Watch stream open until cancelled, or until the server lacks the service."""
        backoff = MIN_BACKOFF
        while True:
            self._delivered = False
            try:
                await self._watch()
                log.info("entry push stream ended by the server; reconnecting")
            except GRPCError as exc:
                if exc.status == Status.UNIMPLEMENTED:
                    self.supported = False
                    log.info("server does not push entry changes; syncing every sync_interval only")
                    return
                log.info(
                    "entry push stream ended status=%s message=%s", exc.status.name, exc.message
                )
            except _STREAM_ERRORS as exc:
                log.info("entry push stream lost error=%r", exc)
            if self._delivered:
                backoff = MIN_BACKOFF
            # Jitter: agents that lost one server together do not come back in one burst.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - not security
            backoff = min(backoff * 2, self._max_backoff)

    async def _watch(self) -> None:
        stub = EntryNotifierStub(self._client.channel())
        async with stub.Watch.open() as stream:
            await stream.send_message(entrynotifier_pb2.WatchRequest(), end=True)
            while (message := await stream.recv_message()) is not None:
                if not self._delivered:
                    log.debug("entry push stream up revision=%d", message.revision)
                self.supported = self._delivered = True
                self.pushes += 1
                self._wake.set()
