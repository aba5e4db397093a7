"""CSR checks for BatchNewX509SVID, on other cores.

Each item's proof-of-possession signature must be verified (SPIRE does too), and an ECDSA P-256
verify costs about as much as signing the SVID. Threads cannot overlap it with signing: each
return from a GIL-free section waits for a busy event loop (docs/hsm.md, "Threads do not help").
So large batches are checked in worker processes, started with ``spawn`` (nothing inherited)
and sent only public data: CSR DER in, SubjectPublicKeyInfo DER or an error message out. The
caller gets one coroutine per chunk, awaits them in order, and signs chunk k while the workers
check the next ones. Small batches, a machine with one core, or a broken pool: checked inline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives import serialization

from plastron.errors import InvalidArgument, PlastronError
from plastron.keymanager import PublicKey
from plastron.server.api.csr import check_public_key, csr_public_key, parse_csr

log = logging.getLogger(__name__)

#: Batches smaller than this are checked inline: a pool round trip costs a few hundred µs.
MIN_POOLED = 16
#: CSRs per pooled task: small enough that signing starts early, big enough to amortise IPC.
CHUNK = 10

CsrItem = tuple[bytes, str]  # (CSR DER, field name for error messages)
CheckedKey = PublicKey | PlastronError
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_inline(items: Sequence[CsrItem]) -> list[CheckedKey]:
    out: list[CheckedKey] = []
    for der, field in items:
        try:
            out.append(csr_public_key(parse_csr(der, field), field))
        except PlastronError as exc:
            out.append(exc)
    return out


def _check_in_worker(items: list[CsrItem]) -> list[bytes | str]:
    """In a worker process: SPKI DER of each good CSR's key, or the refusal's message."""
    return [
        key.public_bytes(*_SPKI) if not isinstance(key, PlastronError) else str(key)
        for key in check_inline(items)
    ]


def _from_worker(answers: list[bytes | str], items: Sequence[CsrItem]) -> list[CheckedKey]:
    out: list[CheckedKey] = []
    for answer, (_, field) in zip(answers, items, strict=True):
        if isinstance(answer, str):
            out.append(InvalidArgument(answer))
        else:  # re-checked here: this process decides what it certifies
            out.append(check_public_key(serialization.load_der_public_key(answer), field))
    return out


def default_workers() -> int:
    """One per core beyond the event loop's, at most 4; none on a single core."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _worker_main(conn: Connection) -> None:
    """A checker process: chunks in, answers out, in order, until None or EOF."""
    try:
        while (items := conn.recv()) is not None:
            conn.send(_check_in_worker(items))
    except (EOFError, OSError, KeyboardInterrupt):
        pass


class _Worker:
    """One process and its pipe. Answers are read on the event loop (``add_reader``), not by a
    helper thread: a thread would have to win the GIL back from the busy loop for every answer
    (the convoy that ProcessPoolExecutor's result thread runs into)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.loop = loop
        self.waiting: collections.deque[asyncio.Future[list[bytes | str]]] = collections.deque()
        self.alive = True
        loop.add_reader(self.conn.fileno(), self._readable)

    def submit(self, items: list[CsrItem]) -> asyncio.Future[list[bytes | str]]:
        future: asyncio.Future[list[bytes | str]] = self.loop.create_future()
        if self.alive:
            try:
                self.conn.send(items)  # a chunk is a few KiB: the pipe buffer takes it at once
                self.waiting.append(future)
                return future
            except OSError:  # the process died since the last answer
                self.stop()
        future.set_exception(BrokenPipeError("CSR check worker stopped"))
        return future

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                answer = self.conn.recv()
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(answer)
        except (EOFError, OSError, IndexError):
            self.stop()

    def stop(self) -> None:
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.conn.fileno())
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.conn.close()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(BrokenPipeError("CSR check worker stopped"))
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class CsrChecker:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else workers
        self._pool: list[_Worker] = []
        self._closed = False

    def _workers(self) -> list[_Worker]:
        if self._closed or self.workers == 0:
            return []
        loop = asyncio.get_running_loop()
        self._pool = [w for w in self._pool if w.alive and w.loop is loop]
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(loop))
        return self._pool

    def check(self, items: Sequence[CsrItem]) -> list[Coroutine[Any, Any, list[CheckedKey]]]:
        """One coroutine per chunk of ``items``, to be awaited in order; the first chunks go to
        the workers now. Close the ones not awaited."""
        chunks = [list(items[k : k + CHUNK]) for k in range(0, len(items), CHUNK)]
        workers = self._workers() if len(items) >= MIN_POOLED else []
        if not workers:
            return [self._inline(chunk) for chunk in chunks]
        run = _PooledRun(chunks, workers)
        return [run.result(k) for k in range(len(chunks))]

    async def _inline(self, chunk: list[CsrItem]) -> list[CheckedKey]:
        return check_inline(chunk)

    def close(self) -> None:
        self._closed = True
        for worker in self._pool:
            worker.stop()
        self._pool.clear()


class _PooledRun:
    """One batch's chunks on the workers. Only ``AHEAD`` chunks per worker are in flight, so a
    500-item batch never fills a pipe (which would block the event loop on send)."""

    AHEAD = 2

    def __init__(self, chunks: list[list[CsrItem]], workers: list[_Worker]) -> None:
        self._chunks = chunks
        self._workers = workers
        self._futures: dict[int, asyncio.Future[list[bytes | str]]] = {}
        self._next = 0
        self._top_up(0)

    def _top_up(self, current: int) -> None:
        limit = min(len(self._chunks), current + self.AHEAD * len(self._workers))
        while self._next < limit:
            worker = min(self._workers, key=lambda w: len(w.waiting))
            self._futures[self._next] = worker.submit(self._chunks[self._next])
            self._next += 1

    async def result(self, k: int) -> list[CheckedKey]:
        self._top_up(k + 1)  # keep the workers busy while chunk k is being signed
        chunk = self._chunks[k]
        try:
            return _from_worker(await self._futures.pop(k), chunk)
        except BrokenPipeError:
            log.warning("a CSR check worker stopped; checking inline (a new one starts later)")
            return check_inline(chunk)
