"""grpclib's per-connection and per-stream state on the server, in less memory.

Every server connection and every request stream holds asyncio ``Event`` and ``Queue``
objects (grpclib's ``Connection``: two events; its ``Stream``: three events and a ``Buffer``
whose ``Queue`` has three deques and an event, plus a deque of its own). Each keeps its waiters
or items in a ``collections.deque``, and even an empty deque allocates a 64-slot block: about
760 bytes each, ten on a connection holding one stream (its agent's Watch).

- An event's or a queue's *waiters* are at most the coroutines of one connection (one reader
  of a stream, its senders waiting for the window): here they are in lists, 56 bytes empty.
  ``remove`` and waking them all are linear on a deque too.
- A stream's *data* (DATA frames queued, then acknowledged chunks) can be many items, one per
  frame a peer chose to send: those stay in deques, whose ``popleft`` is O(1), but a deque
  exists only while it is needed (queued items: more than four, in a tuple until then).
- The HPACK decoder's dynamic table is a list: its size is ours to bound.

And grpclib's ``Handler`` keeps each finished call's stream and task until every tenth new call
on the connection (its ``__gc_interval__``), so a connection whose agent syncs every few
seconds holds up to nine finished calls (their streams, buffers, events, tasks) for good;
:class:`PromptHandler` forgets a call as soon as its task is done.

Only the containers change: waking, cancellation, ordering, flow control and every limit are
asyncio's and grpclib's own code, unchanged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import Any

from grpclib.protocol import Buffer, Connection, Stream
from grpclib.server import Handler
from h2.connection import H2Connection

_NONE: tuple[()] = ()  # in place of an empty deque: len 0, false, nothing to pop


class _Waiters(list[Any]):
    """The part of ``deque`` asyncio's locks and queues use on their waiters."""

    def popleft(self) -> Any:
        return self.pop(0)  # a waiter or two: moving the rest is cheap


class CompactEvent(asyncio.Event):
    """asyncio's Event with its waiters in a list (``set`` wakes all of them, a cancelled
    ``wait`` removes its own: asyncio's code, unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters = _Waiters()  # type: ignore[assignment]


_FEW = 4  # items a queue holds in a tuple before it needs a deque


class CompactQueue(asyncio.Queue[Any]):
    """asyncio's unbounded Queue with its getters and putters in lists, and its items in a
    tuple while there are at most a few (a Watch stream's request leaves its end-of-stream
    marks queued for as long as it is open), in a deque beyond."""

    _queue: deque[Any] | tuple[Any, ...]

    def __init__(self) -> None:
        super().__init__()
        self._getters = _Waiters()
        self._putters = _Waiters()
        self._finished = CompactEvent()
        self._finished.set()  # as asyncio's: no unfinished task yet

    def _init(self, maxsize: int) -> None:
        self._queue = _NONE

    def _put(self, item: Any) -> None:
        queue = self._queue
        if isinstance(queue, deque):
            queue.append(item)
        elif len(queue) < _FEW:
            self._queue = (*queue, item)
        else:
            self._queue = deque((*queue, item))

    def _get(self) -> Any:
        queue = self._queue
        if isinstance(queue, deque):
            item = queue.popleft()
            if not queue:
                self._queue = _NONE
            return item
        self._queue = queue[1:]  # asyncio gets only from a non-empty queue
        return queue[0]


class CompactBuffer(Buffer):
    """grpclib's stream Buffer with its acknowledged chunks in a deque only while a read is
    under way or chunks are left over from one."""

    def __init__(self, ack_callback: Any) -> None:
        super().__init__(ack_callback)
        self._unacked = CompactQueue()
        self._acked = _NONE  # type: ignore[assignment]

    async def read(self, size: int) -> bytes:
        if not isinstance(self._acked, deque):
            self._acked = deque()
        try:
            return await super().read(size)
        finally:
            if not self._acked:
                self._acked = _NONE  # type: ignore[assignment]


def compact_connection(connection: Connection) -> None:
    """Swap a new grpclib Connection's events for compact ones (nothing waits on them yet)."""
    write_ready = CompactEvent()
    if connection.write_ready.is_set():
        write_ready.set()
    connection.write_ready = write_ready
    connection.stream_close_waiter = CompactEvent()


def compact_stream(stream: Stream) -> None:
    """Swap a new grpclib Stream's events and buffer containers for compact ones (called
    right after its ``__init__``: nothing has been fed to it or waits on it yet)."""
    stream.window_updated = CompactEvent()
    stream.headers_received = CompactEvent()
    stream.trailers_received = CompactEvent()
    stream.buffer = CompactBuffer(stream.buffer._ack_callback)


class _HeaderEntries(list[Any]):
    """The part of ``deque`` hpack's HeaderTable uses on its entries."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def compact_decoder_table(h2_connection: H2Connection) -> None:
    """The HPACK decoder's dynamic table of a new connection in a list. Its size is ours to
    bound (SETTINGS_HEADER_TABLE_SIZE, 4,096 bytes: at most 128 entries of 32 bytes or more),
    so inserting at the front stays cheap. The encoder's table keeps its deque: its size is
    the peer's to set."""
    table = h2_connection.decoder.header_table
    assert not table.dynamic_entries  # nothing decoded yet
    table.dynamic_entries = _HeaderEntries()  # type: ignore[assignment]


class PromptHandler(Handler):
    """grpclib's per-connection Handler, dropping a finished call's stream and task at once
    instead of at the connection's next tenth call."""

    def accept(self, stream: Any, headers: Any, release_stream: Any) -> None:
        super().accept(stream, headers, release_stream)
        self._tasks[stream].add_done_callback(partial(self._forget, stream))

    def _forget(self, stream: Any, task: asyncio.Task[None]) -> None:
        # A call reset by the peer was moved to _cancelled by cancel(); leave that to grpclib.
        if self._tasks.get(stream) is task:
            del self._tasks[stream]
