"""One socket write per event-loop turn for a server connection's HTTP/2 output.

grpclib writes each piece of a response to the transport as soon as h2 has framed it: a unary
call's response headers, its message and its trailers are three ``transport.write()`` calls, so
three TLS records (``SSL_write``) and three ``send()`` system calls, each of which on a local
peer also runs the peer's receive path and wakes it. Profiled on the server (an attested agent's
SyncAuthorizedEntries with nothing to return), those writes were the largest single share of
the call's CPU.

:class:`CoalescingWriter` stands between a connection's h2 output and its transport: writes
are gathered and handed to the transport as one at the end of the current event-loop turn
(``loop.call_soon``), when the handler has written everything it had ready. The bytes and their
order are unchanged (every writer of the connection goes through the same one, so HPACK's
header blocks stay in the order h2 encoded them); only their grouping into records and
system calls changes. The transport's flow control still applies: once ``flush_bytes`` are
gathered they are written at once, so no more than that waits here, and a transport that
pauses its writer (``pause_writing``) still stops grpclib, which checks ``write_ready`` before
each write.

A server connection's writer also caps its unsent output (``max_unsent``, see
plastron/transport/limits.py ``MAX_UNSENT_BYTES``): past it the transport is aborted,
``on_overflow`` is told, and nothing more is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from grpclib.config import Configuration
from grpclib.protocol import Connection
from h2.connection import H2Connection

FLUSH_BYTES = 64 * 1024
"""Gathered output written at once rather than at the end of the turn: a large response
(several 16 KiB DATA frames) still goes out in 64 KiB writes, and the transport's own write
buffer and its high-water mark keep bounding what one connection holds."""


class CoalescingWriter:
    """The write side of one connection's transport, gathering writes until the loop's turn
    ends. Used where grpclib calls ``transport.write()`` and ``transport.is_closing()``."""

    __slots__ = (
        "_chunks",
        "_loop",
        "_on_overflow",
        "_overflowed",
        "_scheduled",
        "_size",
        "_transport",
        "flush_bytes",
        "max_unsent",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        flush_bytes: int = FLUSH_BYTES,
        max_unsent: int | None = None,
        on_overflow: Callable[[int], None] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self.flush_bytes = flush_bytes
        self.max_unsent = max_unsent
        self._on_overflow = on_overflow
        self._overflowed = False

    def write(self, data: bytes) -> None:
        if not data or self._overflowed:  # aborted: what comes after is dropped
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self.flush_bytes:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)

    def flush(self) -> None:
        """Hand everything gathered to the transport now (before closing it, for one)."""
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._transport.write(data)
        if self.max_unsent is not None and not self._overflowed:
            # Every byte the connection sends passes here, so this sees all its output.
            unsent = self._transport.get_write_buffer_size()
            if unsent > self.max_unsent:
                self._overflowed = True
                self._transport.abort()  # what is queued is dropped, not sent
                if self._on_overflow is not None:
                    self._on_overflow(unsent)

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    @property
    def pending_bytes(self) -> int:
        return self._size


class CoalescedConnection(Connection):
    """grpclib's connection whose output, and its streams' (they are given :attr:`writer` as
    their transport), goes through one :class:`CoalescingWriter`. Its transport stays the real
    one for everything else (``get_peer()``, ``close()``)."""

    def __init__(
        self,
        connection: H2Connection,
        transport: asyncio.Transport,
        *,
        config: Configuration,
        max_unsent: int | None = None,
        on_overflow: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(connection, transport, config=config)
        self.writer = CoalescingWriter(transport, max_unsent=max_unsent, on_overflow=on_overflow)

    def flush(self) -> None:
        data = self._connection.data_to_send()
        if data:
            self.writer.write(data)

    def flush_now(self) -> None:
        """Write out h2's output and whatever the writer gathered (before closing)."""
        self.flush()
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()  # grpclib closes the transport: what was gathered goes first
        super().close()
