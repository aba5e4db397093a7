"""Signing a batch of workload CSRs (BatchNewX509SVID): one result per item, in order.

Every item costs a CSR check (its proof-of-possession signature, about as dear as signing the
SVID) and a signature. The batch signer picks, per batch, where each happens:

* **workers sign**: the CA key is in an HSM the worker processes can log in to themselves
  (``worker_opener``) and the batch is large: each worker checks and signs its share with its
  own token session, returning leaf DER, so the event loop keeps only the RPC work;
* **workers check, this process signs**: a large batch with a key only this process can use
  (memory, disk, TPM): chunk k is signed while the workers check chunk k+1;
* **all here**: a small batch (a pool round trip costs a few hundred µs), a single core, or a
  closed pool.

Signing here goes through the CA's KeyRunner: inline for memory and disk keys, in a signing
thread for a blocking KeyManager. A chunk a worker could not sign (it died, or cannot reach the
token) is checked and signed here, and the reason logged once, not once per chunk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import time
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from plastron.errors import PlastronError
from plastron.keymanager import KeyManagerOpener, worker_opener
from plastron.server.ca.csr import CheckedKey, CsrItem, check_csrs
from plastron.server.ca.key_runner import KeyRunner
from plastron.server.ca.leaves import LeafDer, LeafPlan, sign_leaves
from plastron.server.ca.slots import X509CA
from plastron.server.ca.worker_pool import WorkerPool, WorkerStopped
from plastron.server.ca.worker_signing import (
    CheckTask,
    LeafOrder,
    SignTask,
    WorkerTasks,
    checked_from_worker,
    signed_from_worker,
)
from plastron.server.metrics import KEYMANAGER_SIGN, SVIDS_SIGNED
from plastron.spiffe.ids import SpiffeId

log = logging.getLogger(__name__)

#: Batches smaller than this stay in this process: a pool round trip costs a few hundred µs.
MIN_POOLED = 16
#: CSRs per pooled check task: small enough that signing here starts early, big enough to
#: amortise IPC.
CHUNK = 10
#: CSRs per pooled sign task. Nothing here waits for a part of such a batch, so a task only has
#: to stay small for the pipe (25 P-256 CSRs are about 6 KiB); each task costs a pickle, a pipe
#: write and a wakeup at both ends. A batch still goes to every worker when each gets a few.
SIGN_CHUNK = 25
SIGN_MIN_SHARE = 4


@dataclass(frozen=True)
class WorkloadCsr:
    """One item of a batch: the entry's identity and the agent's CSR, which contributes its
    public key only (SANs and subject come from the entry)."""

    spiffe_id: SpiffeId
    csr: bytes  # DER PKCS#10
    field: str = "csr"  # names the CSR in error messages, e.g. "params[3].csr"
    ttl: int = 0  # seconds; 0: the CA's default
    dns_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignedX509Svid:
    """One issued X509-SVID, ready for the wire."""

    chain: tuple[bytes, ...]  # DER, the leaf first, up to (excluding) the bundle root
    not_after: dt.datetime  # the leaf's


@dataclass(frozen=True)
class X509Batch:
    """A batch of leaves planned against one CA at one clock reading."""

    ca: X509CA
    not_before: dt.datetime
    leaves: list[LeafPlan | PlastronError]  # in request order; an error for a refused item


#: One chunk's leaves, awaited in order.
_Chunk = Coroutine[Any, Any, list[LeafDer]]


@functools.cache
def default_workers(signing: bool = False) -> int:
    """None on a single core. Checking only: one per core beyond the event loop's, at most 4.
    Signing too: one per core, at most 8, since the loop is left only the RPC work (a quarter
    of the CPU an HSM-signed SVID takes) and each worker has a token session of its own."""
    cores = os.cpu_count() or 1
    if cores == 1:
        return 0
    return min(8, cores) if signing else min(4, cores - 1)


class BatchSigner:
    """The CA's batch signing: its worker pool (started with the first large batch) and the
    choice, per batch, of where the CSRs are checked and the leaves signed."""

    def __init__(self, keys: KeyRunner, workers: int | None = None) -> None:
        """``workers``: how many worker processes; None: :func:`default_workers`."""
        self._keys = keys
        #: How a worker opens the CA's key store itself (an HSM); None: only this process can.
        self.key_opener: KeyManagerOpener | None = worker_opener(keys.key_manager)
        signing = self.key_opener is not None
        self.pool = WorkerPool(
            default_workers(signing) if workers is None else workers,
            functools.partial(WorkerTasks, self.key_opener),
        )
        #: Leaves handed to the workers to sign, and leaves signed in this process.
        self.signed_by_workers = 0
        self.signed_here = 0
        self._last_failure = ""

    def workers_sign(self, n: int) -> bool:
        """Whether a batch of ``n`` signable items is checked and signed by the workers."""
        return self.key_opener is not None and n >= MIN_POOLED and self.pool.usable

    async def sign(
        self, batch: X509Batch, csrs: Sequence[CsrItem]
    ) -> AsyncGenerator[SignedX509Svid | PlastronError, None]:
        """Per item of ``batch`` (whose CSRs ``csrs`` are, in the same order) its SVID or its
        refusal, in order, as the chunks finish."""
        planned = [
            (plan, item)
            for plan, item in zip(batch.leaves, csrs, strict=True)
            if isinstance(plan, LeafPlan)
        ]
        chunks = (
            self._sign_in_workers(batch, planned)
            if self.workers_sign(len(planned))
            else self._check_then_sign(batch, planned)
        )
        tail = batch.ca.chain_after_leaf_der
        signed = 0  # counted once at the end: a labelled metric costs microseconds per touch
        try:
            waiting = iter(chunks)
            leaves: list[LeafDer] = []  # the current chunk's, in reverse
            for plan in batch.leaves:
                if isinstance(plan, PlastronError):
                    yield plan
                    continue
                if not leaves:
                    leaves = (await next(waiting))[::-1]
                leaf = leaves.pop()
                if isinstance(leaf, PlastronError):
                    yield leaf
                    continue
                signed += 1
                yield SignedX509Svid((leaf, *tail), plan.not_after)
        finally:
            if signed:
                SVIDS_SIGNED.labels("x509_workload").inc(signed)
            for chunk in chunks:
                chunk.close()  # the ones not reached (a no-op for the others)

    def _check_then_sign(
        self, batch: X509Batch, planned: list[tuple[LeafPlan, CsrItem]]
    ) -> list[_Chunk]:
        bounds = [(k, min(k + CHUNK, len(planned))) for k in range(0, len(planned), CHUNK)]
        tasks = [CheckTask(tuple(item for _, item in planned[k:end])) for k, end in bounds]
        futures = self.pool.submit(tasks) if len(planned) >= MIN_POOLED else []
        if not futures:
            return [self._checked_here(batch, planned[k:end]) for k, end in bounds]
        return [
            self._checked_by_worker(batch, planned[k:end], future)
            for (k, end), future in zip(bounds, futures, strict=True)
        ]

    async def _checked_here(
        self, batch: X509Batch, planned: list[tuple[LeafPlan, CsrItem]]
    ) -> list[LeafDer]:
        return await self._sign_here(batch, planned, check_csrs([item for _, item in planned]))

    async def _checked_by_worker(
        self, batch: X509Batch, planned: list[tuple[LeafPlan, CsrItem]], future: asyncio.Future[Any]
    ) -> list[LeafDer]:
        items = [item for _, item in planned]
        try:
            keys = checked_from_worker(await future, items)
        except WorkerStopped:
            log.warning("a CSR worker stopped; checking here (a new one starts later)")
            keys = check_csrs(items)
        return await self._sign_here(batch, planned, keys)

    def _sign_in_workers(
        self, batch: X509Batch, planned: list[tuple[LeafPlan, CsrItem]]
    ) -> list[_Chunk]:
        bounds = even_chunks(len(planned), self.pool.size, SIGN_CHUNK, SIGN_MIN_SHARE)
        tasks = [
            SignTask(
                batch.ca.certificate_der,
                batch.ca.key_id,
                batch.not_before,
                tuple(LeafOrder(der, field, plan) for plan, (der, field) in planned[k:end]),
            )
            for k, end in bounds
        ]
        futures = self.pool.submit(tasks)
        return [
            self._signed_by_worker(batch, planned[k:end], future)
            for (k, end), future in zip(bounds, futures, strict=True)
        ]

    async def _signed_by_worker(
        self, batch: X509Batch, planned: list[tuple[LeafPlan, CsrItem]], future: asyncio.Future[Any]
    ) -> list[LeafDer]:
        started = time.perf_counter()
        try:
            answer = await future
            signing_time = time.perf_counter() - started
            KEYMANAGER_SIGN.labels(self._keys.plugin, "x509_batch").observe(signing_time)
        except WorkerStopped:
            log.warning("a signing worker stopped; signing here (a new one starts later)")
        else:
            leaves = signed_from_worker(answer, len(planned))
            if not isinstance(leaves, PlastronError):
                self._last_failure = ""
                self.signed_by_workers += len(planned)
                return leaves
            self._note_failure(leaves)
        return await self._checked_here(batch, planned)

    def _note_failure(self, exc: PlastronError) -> None:
        # An outage fails every chunk the same way: say it once, not once per chunk.
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_failure:
            self._last_failure = message
            log.warning("a signing worker could not sign (%s); signing here", message)

    async def _sign_here(
        self,
        batch: X509Batch,
        planned: list[tuple[LeafPlan, CsrItem]],
        keys: list[CheckedKey],
    ) -> list[LeafDer]:
        """The chunk's leaves signed in this process, in one KeyManager call."""
        orders = [(plan, key) for (plan, _), key in zip(planned, keys, strict=True)]
        refused = [key for key in keys if isinstance(key, PlastronError)]
        signable = len(keys) - len(refused)
        if not signable:
            return list(refused)  # every CSR refused: nothing to ask the key store
        key_manager, ca = self._keys.key_manager, batch.ca

        def sign_all() -> list[LeafDer]:
            return sign_leaves(
                orders,
                issuer=ca.certificate,
                issuer_key=key_manager.signer(ca.key_id),
                not_before=batch.not_before,
            )

        self.signed_here += signable
        return await self._keys.sign("x509_batch", sign_all)

    def close(self) -> None:
        self.pool.close()


def even_chunks(
    n: int, workers: int, size: int = CHUNK, min_share: int = CHUNK // 2
) -> list[tuple[int, int]]:
    """(start, end) of chunks of about ``size`` items, their count a multiple of ``workers``
    where that keeps them at least ``min_share``: a lone batch finishes when its last worker
    does, so each should get the same share."""
    if n == 0:
        return []
    count = max(1, round(n / size))
    if workers > 1:
        rounded = -(-count // workers) * workers
        count = rounded if n // rounded >= min_share else count
    base, extra = divmod(n, count)
    bounds, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds
