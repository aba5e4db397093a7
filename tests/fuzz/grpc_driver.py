"""A raw gRPC client for the bad-input suite: it sends any bytes (a fuzzed message, or bytes
that are no protobuf at all) to any method path and reports how the call ended, without
decoding the replies. One event loop per module drives it from Hypothesis' synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import StreamClosedError

CALL_TIMEOUT = 30.0
# A stream (Watch, FetchX509SVID...) that sent replies and then stays quiet this long is left.
STREAM_QUIET_SECONDS = 0.1
MAX_STREAM_REPLIES = 5


class RawCodec(CodecBase):
    """Sends bytes as they are (a Message is serialised first); hands replies back as bytes."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message.SerializeToString() if isinstance(message, Message) else bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


@dataclass
class Outcome:
    status: Status | None  # None: the call ended OK
    message: str = ""
    replies: int = 0


class RawClient:
    """Calls over one channel (made lazily inside ``loop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make: Callable[[], Channel]) -> None:
        self.loop, self._make = loop, make
        self._channel: Channel | None = None

    def call(
        self, path: str, body: bytes | Message, *, streaming: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Outcome:  # fmt: skip
        """Send ``body`` as the only request message and read the replies; a ``streaming``
        reply that stays open is left after a quiet spell (or a few replies)."""
        return self.loop.run_until_complete(self._call(path, body, streaming, metadata))

    async def _call(
        self, path: str, body: bytes | Message, streaming: bool, metadata: Mapping[str, str] | None
    ) -> Outcome:
        if self._channel is None:
            self._channel = self._make()
        out = Outcome(None)
        try:
            async with self._channel.request(
                path, Cardinality.STREAM_STREAM, bytes, bytes,
                timeout=CALL_TIMEOUT, metadata=dict(metadata or {}),
            ) as stream:  # fmt: skip
                await stream.send_message(body, end=True)
                while True:
                    try:
                        reply = await self._next(stream, streaming and out.replies > 0)
                    except TimeoutError:  # an open stream gone quiet: seen enough
                        await _cancel(stream)
                        return out
                    if reply is None:
                        break
                    out.replies += 1
                    if out.replies == MAX_STREAM_REPLIES:
                        await _cancel(stream)
                        return out
        except GRPCError as exc:
            out.status, out.message = exc.status, exc.message or ""
        except StreamTerminatedError as exc:  # the peer reset the stream: no status at all
            out.status, out.message = Status.UNKNOWN, f"stream terminated: {exc}"
        return out

    @staticmethod
    async def _next(stream: Any, quiet_limit: bool) -> bytes | None:
        if quiet_limit:
            return await asyncio.wait_for(stream.recv_message(), STREAM_QUIET_SECONDS)
        return await stream.recv_message()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            # let the loop run the transport's close callbacks before it is closed itself
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.run_until_complete(asyncio.sleep(0))


async def _cancel(stream: Any) -> None:
    with contextlib.suppress(StreamClosedError):  # the server ended it meanwhile
        await stream.cancel()


def sqlite_dump(path: Path) -> str:
    """Every row of every table, read through a read-only connection to the live file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()
