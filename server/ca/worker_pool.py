"""A pool of worker processes that run CPU-bound tasks for the event loop.

Workers are started with ``spawn`` (nothing inherited) and exchange only picklable tasks and
answers over a pipe each. Answers are read on the event loop (``add_reader``), not by a helper
thread: a thread would have to win the GIL back from the busy loop for every answer (the convoy
that ProcessPoolExecutor's result thread runs into, docs/hsm.md).

At most ``pipe_depth`` tasks are in a worker's pipe or process at a time; the rest wait on this
side and go out as answers come back. A task is a few KiB (a pipe holds 64), so a send does not
block the loop; a task near the 16 KiB CSR limit may make it wait for the worker to read, but
never deadlock it: answers (at most ``pipe_depth`` of a few KiB) always fit, so the worker never
blocks on sending one.

What a worker does is up to the ``make_handler`` it is given (server/ca/worker_signing.py): a
picklable factory called once in the worker process, whose result answers each task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, Protocol

#: Tasks a worker holds (in its pipe or in hand) before the pool keeps the rest on this side.
PIPE_DEPTH = 3


class TaskHandler(Protocol):
    """What a worker process runs: one answer per task, in order; ``close`` at the end."""

    def __call__(self, task: Any) -> Any: ...

    def close(self) -> None: ...


class WorkerStopped(BrokenPipeError):
    """The worker that had a task died or was stopped before it answered."""


class WorkerState(NamedTuple):
    """A worker as the pool sees it now."""

    pid: int | None
    alive: bool
    sent: int  # tasks in its pipe or process, not yet answered
    queued: int  # tasks waiting on this side for room in its pipe


def _worker_main(conn: Connection, make_handler: Callable[[], TaskHandler]) -> None:
    """A worker process: tasks in, answers out, in order, until None or EOF."""
    handler = make_handler()
    try:
        while (task := conn.recv()) is not None:
            conn.send(handler(task))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        handler.close()


class _Worker:
    """One process, its pipe, and the futures of its unanswered tasks."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        make_handler: Callable[[], TaskHandler],
        pipe_depth: int,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, make_handler), daemon=True)
        self.process.start()
        child.close()
        self.loop = loop
        self.pipe_depth = pipe_depth
        self.sent: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.backlog: collections.deque[tuple[object, asyncio.Future[Any]]] = collections.deque()
        self.alive = True
        loop.add_reader(self.conn.fileno(), self._readable)

    @property
    def load(self) -> int:
        """Tasks given to this worker and not yet answered."""
        return len(self.sent) + len(self.backlog)

    def state(self) -> WorkerState:
        return WorkerState(self.process.pid, self.alive, len(self.sent), len(self.backlog))

    def submit(self, task: object) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self.alive:
            future.set_exception(WorkerStopped("worker process stopped"))
            return future
        self.backlog.append((task, future))
        self._send_backlog()
        return future

    def _send_backlog(self) -> None:
        while self.alive and self.backlog and len(self.sent) < self.pipe_depth:
            task, future = self.backlog.popleft()
            try:
                self.conn.send(task)
            except OSError:  # the process died since the last answer
                self.backlog.appendleft((task, future))
                self.stop()
                return
            self.sent.append(future)

    def _readable(self) -> None:
        # One answer per call: the loop's reader is level-triggered, so it calls again while
        # the pipe holds more. Connection.poll() would build a selector per call (twice per
        # answer), a tenth of the loop's time under load.
        try:
            answer = self.conn.recv()
            future = self.sent.popleft()
            if not future.done():
                future.set_result(answer)
        except (EOFError, OSError, IndexError):
            self.stop()
            return
        self._send_backlog()

    def stop(self) -> None:
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.conn.fileno())
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        futures = [*self.sent, *(future for _, future in self.backlog)]
        self.sent.clear()
        self.backlog.clear()
        for future in futures:
            if not future.done():
                future.set_exception(WorkerStopped("worker process stopped"))
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class WorkerPool:
    """``size`` worker processes, started on first use on the running loop, replaced when one
    dies (at the next :meth:`submit`), all stopped by :meth:`close`."""

    def __init__(
        self,
        size: int,
        make_handler: Callable[[], TaskHandler],
        *,
        pipe_depth: int = PIPE_DEPTH,
    ) -> None:
        if size < 0 or pipe_depth < 1:
            raise ValueError(
                f"a pool needs size >= 0 and pipe_depth >= 1, not {size}, {pipe_depth}"
            )
        self.size = size
        self.pipe_depth = pipe_depth
        self._make_handler = make_handler
        self._workers: list[_Worker] = []
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether :meth:`submit` will hand tasks to processes (a size above 0, not closed)."""
        return self.size > 0 and not self._closed

    def submit(self, tasks: Sequence[object]) -> list[asyncio.Future[Any]]:
        """Hand ``tasks`` to the workers now, each to the least loaded; their answers' futures,
        in order (raising :class:`WorkerStopped` if a worker dies first). Empty when the pool
        is not :attr:`usable`."""
        workers = self._live_workers()
        if not workers:
            return []
        futures = []
        for task in tasks:
            future = min(workers, key=lambda w: w.load).submit(task)
            # A caller that fails early never awaits its later tasks; a worker's death must not
            # then be logged as an exception nobody retrieved (awaiting still raises it).
            future.add_done_callback(_retrieve)
            futures.append(future)
        return futures

    def _live_workers(self) -> list[_Worker]:
        if not self.usable:
            return []
        loop = asyncio.get_running_loop()
        self._workers = [w for w in self._workers if w.alive and w.loop is loop]
        while len(self._workers) < self.size:
            self._workers.append(_Worker(loop, self._make_handler, self.pipe_depth))
        return self._workers

    def workers(self) -> list[WorkerState]:
        """The processes started so far (none before the first :meth:`submit`)."""
        return [w.state() for w in self._workers]

    def close(self) -> None:
        """Stop every worker; the pool is not :attr:`usable` afterwards."""
        self._closed = True
        for worker in self._workers:
            worker.stop()
        self._workers.clear()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
