"""CSR checks for BatchNewX509SVID, on other cores.

Each item's proof-of-possession signature must be verified (SPIRE does too), and an ECDSA P-256
verify costs about as much as signing the SVID. Threads cannot overlap it with signing: each
return from a GIL-free section waits for a busy event loop (docs/hsm.md, "Threads do not help").
So large batches are checked in worker processes, started with ``spawn`` (nothing inherited)
and sent only public data: CSR DER in, SubjectPublicKeyInfo DER or an error message out. The
caller gets one coroutine per chunk, awaits them in order, and signs chunk k while the workers
check the next ones. Small batches, a machine with one core, or a broken pool: checked inline.

When the CA's KeyManager can be opened by a worker on its own (an HSM, ``worker_opener``), the
workers sign too (:meth:`CsrChecker.sign`, server/api/worker_signing.py): each logs in to the
token with its own session and returns leaf DER, so the event loop keeps only the RPC work. A
chunk a worker cannot sign (it died, or could not open the token) is checked and signed here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron.errors import InvalidArgument, KeyManagerError, PlastronError
from plastron.keymanager import KeyManagerOpener, PublicKey
from plastron.server.api.convert import ca_der
from plastron.server.api.csr import check_public_key, csr_public_key, parse_csr
from plastron.server.api.worker_signing import (
    LeafOrder,
    SignTask,
    WorkerSigner,
    from_report,
)
from plastron.server.ca.server_ca import LeafPlan, X509Batch

log = logging.getLogger(__name__)

#: Batches smaller than this are checked inline: a pool round trip costs a few hundred µs.
MIN_POOLED = 16
#: CSRs per pooled task: small enough that signing starts early, big enough to amortise IPC.
CHUNK = 10

CsrItem = tuple[bytes, str]  # (CSR DER, field name for error messages)
CheckedKey = PublicKey | PlastronError
SignedLeaf = bytes | PlastronError  # leaf DER, or why this item was refused
#: Signs checked orders of a batch in this process (ServerCA.sign_planned, batch bound).
LocalSigner = Callable[
    [Sequence[tuple[LeafPlan, PublicKey]]], Awaitable[list[x509.Certificate | PlastronError]]
]
_DER = serialization.Encoding.DER
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


@functools.cache
def default_workers(signing: bool = False) -> int:
    """None on a single core. Checking only: one per core beyond the event loop's, at most 4.
    Signing too: one per core, at most 8, since the loop is left only the RPC work (a quarter
    of the CPU an HSM-signed SVID takes) and each worker has a token session of its own."""
    cores = os.cpu_count() or 1
    if cores == 1:
        return 0
    return min(8, cores) if signing else min(4, cores - 1)


def _worker_main(conn: Connection, opener: KeyManagerOpener | None) -> None:
    """A worker process: tasks in, answers out, in order, until None or EOF."""
    signer = WorkerSigner(opener) if opener is not None else None
    try:
        while (task := conn.recv()) is not None:
            kind, payload = task
            if kind == "sign" and signer is not None:
                try:
                    answer: Any = signer.run(payload)
                except Exception as exc:  # a module's surprise: the server signs this chunk
                    answer = ("KeyManagerError", f"signing worker: {type(exc).__name__}: {exc}")
                conn.send(answer)
            elif kind == "sign":
                conn.send(("Unavailable", "this worker was started without a key store"))
            else:
                conn.send(_check_in_worker(payload))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        if signer is not None:
            signer.close()


class _Worker:
    """One process and its pipe. Answers are read on the event loop (``add_reader``), not by a
    helper thread: a thread would have to win the GIL back from the busy loop for every answer
    (the convoy that ProcessPoolExecutor's result thread runs into).

    At most ``MAX_SENT`` tasks are in the pipe or the process at a time; the rest wait in
    ``backlog`` and go out as answers come back. A task is a few KiB (a pipe holds 64), so a
    send does not block the loop; a chunk of CSRs near the 16 KiB limit may make it wait for
    the worker to read, but never deadlock it: answers (at most MAX_SENT of a few KiB) always
    fit, so the worker never blocks on sending one."""

    MAX_SENT = 3

    def __init__(
        self, loop: asyncio.AbstractEventLoop, opener: KeyManagerOpener | None = None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, opener), daemon=True)
        self.process.start()
        child.close()
        self.loop = loop
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.backlog: collections.deque[tuple[tuple[str, Any], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self.alive = True
        loop.add_reader(self.conn.fileno(), self._readable)

    @property
    def load(self) -> int:
        """Tasks given to this worker and not yet answered."""
        return len(self.waiting) + len(self.backlog)

    def submit(self, task: tuple[str, Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self.alive:
            future.set_exception(BrokenPipeError("CSR worker stopped"))
            return future
        self.backlog.append((task, future))
        self._send_backlog()
        return future

    def _send_backlog(self) -> None:
        while self.alive and self.backlog and len(self.waiting) < self.MAX_SENT:
            task, future = self.backlog.popleft()
            try:
                self.conn.send(task)
            except OSError:  # the process died since the last answer
                self.backlog.appendleft((task, future))
                self.stop()
                return
            self.waiting.append(future)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                answer = self.conn.recv()
                future = self.waiting.popleft()
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
        futures = [*self.waiting, *(future for _, future in self.backlog)]
        self.waiting.clear()
        self.backlog.clear()
        for future in futures:
            if not future.done():
                future.set_exception(BrokenPipeError("CSR worker stopped"))
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class CsrChecker:
    def __init__(
        self, workers: int | None = None, key_opener: KeyManagerOpener | None = None
    ) -> None:
        """``key_opener``: the CA's ``worker_opener()``; with it the workers sign too. Set it
        before the first batch: the pool size follows it unless ``workers`` is given."""
        self._requested = workers
        self.key_opener = key_opener
        self._pool: list[_Worker] = []
        self._closed = False
        self._last_failure = ""

    @property
    def workers(self) -> int:
        """How many worker processes the pool keeps."""
        if self._requested is not None:
            return self._requested
        return default_workers(signing=self.key_opener is not None)

    def _workers(self) -> list[_Worker]:
        if self._closed or self.workers == 0:
            return []
        loop = asyncio.get_running_loop()
        self._pool = [w for w in self._pool if w.alive and w.loop is loop]
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(loop, self.key_opener))
        return self._pool

    def check(self, items: Sequence[CsrItem]) -> list[Coroutine[Any, Any, list[CheckedKey]]]:
        """One coroutine per chunk of ``items``, to be awaited in order; the chunks go to the
        workers now. Close the ones not awaited."""
        chunks = [list(items[k : k + CHUNK]) for k in range(0, len(items), CHUNK)]
        workers = self._workers() if len(items) >= MIN_POOLED else []
        if not workers:
            return [self._inline(chunk) for chunk in chunks]
        run = _PooledRun([("check", chunk) for chunk in chunks], workers)
        return [self._checked(run, k, chunk) for k, chunk in enumerate(chunks)]

    async def _inline(self, chunk: list[CsrItem]) -> list[CheckedKey]:
        return check_inline(chunk)

    async def _checked(self, run: _PooledRun, k: int, chunk: list[CsrItem]) -> list[CheckedKey]:
        try:
            return _from_worker(await run.result(k), chunk)
        except BrokenPipeError:
            log.warning("a CSR worker stopped; checking inline (a new one starts later)")
            return check_inline(chunk)

    def signs(self, n: int) -> bool:
        """Whether a batch of ``n`` items is to be checked and signed by the workers."""
        return (
            self.key_opener is not None
            and n >= MIN_POOLED
            and self.workers > 0
            and not self._closed
        )

    def sign(
        self,
        items: Sequence[CsrItem],
        batch: X509Batch,
        plans: Sequence[LeafPlan],
        local: LocalSigner,
    ) -> list[Coroutine[Any, Any, list[SignedLeaf]]]:
        """Check and sign in the workers (see :meth:`signs`): one coroutine per chunk of
        ``items`` (whose leaves ``plans`` describe), to be awaited in order, each giving leaf
        DER or an error per item. A chunk no worker can take is checked and signed here, by
        ``local``. Close the coroutines not awaited."""
        workers = self._workers() if self.key_opener is not None else []
        bounds = _even_chunks(len(items), max(1, len(workers)))
        if not workers:  # only if signs() was not asked first
            return [
                _sign_here(check_inline(items[k:e]), list(plans[k:e]), local) for k, e in bounds
            ]
        issuer = ca_der(batch.ca.certificate)
        chunks: list[tuple[list[CsrItem], list[LeafPlan]]] = []
        tasks: list[tuple[str, Any]] = []
        for k, end in bounds:
            chunk, chunk_plans = list(items[k:end]), list(plans[k:end])
            orders = tuple(
                LeafOrder(der, field, plan.spiffe_id, plan.not_after, plan.dns_names)
                for (der, field), plan in zip(chunk, chunk_plans, strict=True)
            )
            chunks.append((chunk, chunk_plans))
            tasks.append(("sign", SignTask(issuer, batch.ca.key_id, batch.not_before, orders)))
        run = _PooledRun(tasks, workers)
        return [self._signed(run, k, *chunk, local) for k, chunk in enumerate(chunks)]

    async def _signed(
        self,
        run: _PooledRun,
        k: int,
        chunk: list[CsrItem],
        plans: list[LeafPlan],
        local: LocalSigner,
    ) -> list[SignedLeaf]:
        try:
            answer = await run.result(k)
        except BrokenPipeError:
            log.warning("a signing worker stopped; signing here (a new one starts later)")
        else:
            if isinstance(answer, list) and len(answer) == len(chunk):
                self._last_failure = ""
                return [a if isinstance(a, bytes) else from_report(a) for a in answer]
            self._note_failure(
                from_report(answer)
                if isinstance(answer, tuple)
                else KeyManagerError(f"{len(answer)} answers for {len(chunk)} orders")
            )
        return await _sign_here(check_inline(chunk), plans, local)

    def _note_failure(self, exc: PlastronError) -> None:
        # An outage fails every chunk the same way: say it once, not once per chunk.
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_failure:
            self._last_failure = message
            log.warning("a signing worker could not sign (%s); signing here", message)

    def close(self) -> None:
        self._closed = True
        for worker in self._pool:
            worker.stop()
        self._pool.clear()


def _even_chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """(start, end) of chunks of about ``CHUNK`` items, their count a multiple of ``workers``
    where that keeps them at least ``CHUNK // 2``: a lone batch finishes when its last worker
    does, so each should get the same share."""
    if n == 0:
        return []
    count = max(1, round(n / CHUNK))
    if workers > 1:
        rounded = -(-count // workers) * workers
        count = rounded if n // rounded >= CHUNK // 2 else count
    base, extra = divmod(n, count)
    bounds, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


async def _sign_here(
    keys: list[CheckedKey], plans: list[LeafPlan], local: LocalSigner
) -> list[SignedLeaf]:
    orders = [(p, k) for p, k in zip(plans, keys, strict=True) if not isinstance(k, PlastronError)]
    signed = iter(await local(orders))
    out: list[SignedLeaf] = []
    for key in keys:
        if isinstance(key, PlastronError):
            out.append(key)
        else:
            leaf = next(signed)
            out.append(leaf if isinstance(leaf, PlastronError) else leaf.public_bytes(_DER))
    return out


class _PooledRun:
    """One batch's tasks, all handed to the workers at once (each worker keeps its own backlog),
    spread so that every worker has about the same number to do."""

    def __init__(self, tasks: list[tuple[str, Any]], workers: list[_Worker]) -> None:
        self._futures: dict[int, asyncio.Future[Any]] = {}
        for k, task in enumerate(tasks):
            worker = min(workers, key=lambda w: w.load)
            self._futures[k] = future = worker.submit(task)
            # A batch that fails early never awaits its later tasks; a worker's death must not
            # then be logged as an exception nobody retrieved (awaiting still raises it).
            future.add_done_callback(_retrieve)

    async def result(self, k: int) -> Any:
        """Task k's answer; BrokenPipeError if its worker stopped."""
        return await self._futures.pop(k)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
