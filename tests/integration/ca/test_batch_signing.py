"""Batch signing (server/ca/batch_signing.py, worker_pool.py) with a memory CA key: the worker
processes check the CSRs and this process signs. The answers are the ones signed all here, small
batches never start a worker, a killed worker is survived and replaced, close() leaves no
process, and the pool never has more than its pipe depth in a worker's pipe."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import os
import pickle
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import ManualClock
from plastron.errors import PlastronError
from plastron.keymanager import KeyManager, KeyManagerOpener, MemoryKeyManager
from plastron.server.ca.batch_signing import (
    CHUNK,
    MIN_POOLED,
    SIGN_CHUNK,
    SIGN_MIN_SHARE,
    BatchSigner,
    SignedX509Svid,
    WorkloadCsr,
    default_workers,
    even_chunks,
)
from plastron.server.ca.config import CAConfig
from plastron.server.ca.key_runner import KeyRunner
from plastron.server.ca.leaves import LeafPlan
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.server.ca.worker_pool import WorkerPool
from plastron.server.ca.worker_signing import CheckTask, LeafOrder, SignTask, WorkerTasks
from plastron.spiffe.ids import TrustDomain

TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
Result = SignedX509Svid | PlastronError


async def open_ca(workers: int) -> ServerCA:
    return await ServerCA.open(
        config=CAConfig(trust_domain=TD, worker_processes=workers),
        key_manager=MemoryKeyManager(),
        store=MemoryCAStore(),
        clock=ManualClock(START),
    )


@pytest.fixture
async def pooled() -> AsyncIterator[ServerCA]:
    ca = await open_ca(2)
    yield ca
    ca.close()


@pytest.fixture
async def here() -> AsyncIterator[ServerCA]:
    ca = await open_ca(0)
    yield ca
    ca.close()


def csr_der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def mixed_batch() -> list[WorkloadCsr]:
    """26 requests: good CSRs of three key types, four bad CSRs, an entry the CA refuses."""
    good = [csr_der(ec.generate_private_key(ec.SECP256R1())) for _ in range(20)]
    good.append(csr_der(ec.generate_private_key(ec.SECP384R1())))
    good.append(csr_der(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    tampered = bytearray(good[0])
    tampered[-5] ^= 0xFF  # inside the signature
    weak = csr_der(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    ders = [*good[:10], b"", bytes(tampered), *good[10:], b"not a csr", weak]
    requests = [
        WorkloadCsr(TD.spiffe_id(f"/w/{i}"), der, f"params[{i}].csr", 600, (f"w{i}.example.org",))
        for i, der in enumerate(ders)
    ]
    requests[3] = WorkloadCsr(TD.spiffe_id("/w/3"), ders[3], "params[3].csr", 0, ("bad name",))
    return requests


async def issue(ca: ServerCA, requests: list[WorkloadCsr]) -> list[Result]:
    async with contextlib.aclosing(ca.sign_workload_x509_svids(requests)) as results:
        return [result async for result in results]


def summary(results: list[Result]) -> list[bytes | str]:
    """Per item its leaf's public key, or its refusal: what must not depend on where it ran."""
    return [
        f"{type(r).__name__}: {r}"
        if isinstance(r, PlastronError)
        else x509.load_der_x509_certificate(r.chain[0]).public_key().public_bytes(*SPKI)
        for r in results
    ]


def check_leaves(ca: ServerCA, requests: list[WorkloadCsr], results: list[Result]) -> None:
    issuer = ca.x509_authority()[0]
    for request, result in zip(requests, results, strict=True):
        if isinstance(result, PlastronError):
            continue
        leaf = x509.load_der_x509_certificate(result.chain[0])
        leaf.verify_directly_issued_by(issuer)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(request.spiffe_id)]
        assert tuple(san.get_values_for_type(x509.DNSName)) == request.dns_names
        assert result.not_after == START + dt.timedelta(seconds=600)
        assert leaf.not_valid_after_utc == result.not_after


def processes_gone(pids: list[int | None]) -> bool:
    return all(pid is not None and not Path(f"/proc/{pid}").exists() for pid in pids)


async def test_workers_answer_exactly_as_this_process(pooled: ServerCA, here: ServerCA) -> None:
    requests = mixed_batch()
    in_workers = await issue(pooled, requests)
    assert [w.alive for w in pooled.batches.pool.workers()] == [True, True]
    check_leaves(pooled, requests, in_workers)
    assert summary(in_workers) == summary(await issue(here, requests))
    assert here.batches.pool.workers() == []
    errors = [r for r in in_workers if isinstance(r, PlastronError)]
    assert [str(e) for e in errors] == [
        "DNS name 'bad name' must be ASCII without whitespace",
        "params[10].csr: missing CSR",
        "params[11].csr: CSR signature is invalid",
        "params[24].csr: malformed CSR (not DER PKCS#10)",
        "params[25].csr: RSA key of 1024 bits is below 2048",
    ]


async def test_small_batches_are_signed_without_workers(pooled: ServerCA) -> None:
    requests = mixed_batch()[: MIN_POOLED - 1]
    results = await issue(pooled, requests)
    check_leaves(pooled, requests, results)
    assert pooled.batches.pool.workers() == []


async def test_a_killed_worker_is_survived_and_replaced() -> None:
    ca = await open_ca(1)
    try:
        requests = mixed_batch()
        expected = summary(await issue(ca, requests))
        (first,) = ca.batches.pool.workers()
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        # The chunks sent to the dead worker are checked here; nothing is lost.
        assert summary(await issue(ca, requests)) == expected
        assert summary(await issue(ca, requests)) == expected
        (second,) = ca.batches.pool.workers()
        assert second.pid != first.pid and second.alive
    finally:
        ca.close()


async def test_close_stops_every_worker() -> None:
    ca = await open_ca(2)
    requests = mixed_batch()
    expected = summary(await issue(ca, requests))
    pids = [w.pid for w in ca.batches.pool.workers()]
    assert len(pids) == 2
    ca.batches.close()
    assert processes_gone(pids)
    assert not ca.batches.pool.usable
    assert summary(await issue(ca, requests)) == expected  # signed here now
    assert ca.batches.pool.workers() == []
    ca.close()


async def test_a_full_batch_keeps_its_order(pooled: ServerCA) -> None:
    """500 requests (the API's limit), one refused CSR in its own slot."""
    ders = [csr_der(ec.generate_private_key(ec.SECP256R1())) for _ in range(499)]
    ders.insert(321, ders[0][:-3])  # truncated
    requests = [
        WorkloadCsr(TD.spiffe_id(f"/w/{i}"), der, f"params[{i}].csr", 600)
        for i, der in enumerate(ders)
    ]
    results = await issue(pooled, requests)
    check_leaves(pooled, requests, results)
    refused = [i for i, r in enumerate(results) if isinstance(r, PlastronError)]
    assert refused == [321]
    assert str(results[321]).startswith("params[321].csr: malformed CSR")


async def test_the_pool_keeps_at_most_its_pipe_depth_in_a_pipe() -> None:
    """Tasks beyond a worker's pipe depth wait on this side, so no pipe ever fills."""
    items = [(csr_der(ec.generate_private_key(ec.SECP256R1())), "csr") for _ in range(CHUNK)]
    pool = WorkerPool(2, functools.partial(WorkerTasks, None), pipe_depth=3)
    try:
        futures = pool.submit([CheckTask(tuple(items)) for _ in range(10)])
        states = pool.workers()
        assert [(s.sent, s.queued) for s in states] == [(3, 2), (3, 2)]
        for future in futures:
            answer = await future
            assert len(answer) == CHUNK and all(isinstance(a, bytes) for a in answer)
            assert all(s.sent <= 3 for s in pool.workers())
        assert [(s.sent, s.queued) for s in pool.workers()] == [(0, 0), (0, 0)]
    finally:
        pool.close()
    assert pool.submit([CheckTask(tuple(items))]) == []  # closed: the caller works alone


@pytest.mark.parametrize("n", [16, 17, 20, 31, 50, 99, 100, 500])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
@pytest.mark.parametrize(("size", "min_share"), [(CHUNK, CHUNK // 2), (SIGN_CHUNK, SIGN_MIN_SHARE)])
def test_signing_chunks_share_a_batch_evenly(
    n: int, workers: int, size: int, min_share: int
) -> None:
    bounds = even_chunks(n, workers, size, min_share)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert max(sizes) <= 2 * size
    if n // workers >= min_share:  # enough for every worker: each gets the same share
        assert len(bounds) % workers == 0, bounds


def test_a_batch_of_50_is_one_sign_task_per_worker() -> None:
    """Each sign task costs a pickle, a pipe write and a wakeup at both ends: a batch the
    agent sends (50) goes out as one task per worker, not in ten-CSR pieces."""
    assert even_chunks(50, 2, SIGN_CHUNK, SIGN_MIN_SHARE) == [(0, 25), (25, 50)]
    assert even_chunks(16, 2, SIGN_CHUNK, SIGN_MIN_SHARE) == [(0, 8), (8, 16)]


def test_a_sign_task_crosses_the_pipe_whole() -> None:
    """What the worker unpickles is the order the server made; the SPIFFE ID travels as text
    and is parsed (so checked) again on the worker's side."""
    plan = LeafPlan(TD.spiffe_id("/w/1"), START, ("a.example.org",))
    task = SignTask(b"issuer", "x509-CA-A", START, (LeafOrder(b"csr", "params[0].csr", plan),))
    data = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == task
    assert b"spiffe://example.org/w/1" in data
    forged = data.replace(b"spiffe://example.org/w/1", b"spiffe://example.org//w1")
    with pytest.raises(PlastronError, match="empty"):
        pickle.loads(forged)


class OpenableKeyManager(MemoryKeyManager):
    """A memory key store that claims a worker could open it (as an HSM's can)."""

    def __init__(self, opener: Callable[[], KeyManager]) -> None:
        super().__init__()
        self._opener = opener

    def worker_opener(self) -> KeyManagerOpener:
        return self._opener


def never_opened() -> KeyManager:
    raise AssertionError("deciding where to sign opens nothing")


def test_the_workers_sign_only_with_a_key_opener_a_pool_and_a_large_batch() -> None:
    assert not BatchSigner(KeyRunner(MemoryKeyManager()), 2).workers_sign(100)  # no opener
    openable = KeyRunner(OpenableKeyManager(never_opened))
    assert not BatchSigner(openable, 0).workers_sign(100)  # a single core
    signer = BatchSigner(openable, 2)
    assert not signer.workers_sign(MIN_POOLED - 1)
    assert signer.workers_sign(MIN_POOLED)
    signer.close()
    assert not signer.workers_sign(MIN_POOLED)
    assert signer.pool.workers() == []  # nothing was started


def test_default_pool_follows_the_key_opener(monkeypatch: pytest.MonkeyPatch) -> None:
    def with_cores(n: int) -> tuple[int, int]:
        monkeypatch.setattr(os, "cpu_count", lambda: n)
        default_workers.cache_clear()
        checking = BatchSigner(KeyRunner(MemoryKeyManager()))
        signing = BatchSigner(KeyRunner(OpenableKeyManager(never_opened)))
        return checking.pool.size, signing.pool.size

    try:
        # (checking only: one per core beyond the loop's, at most 4; signing: one per core,
        # at most 8; a single core: none)
        assert with_cores(1) == (0, 0)
        assert with_cores(3) == (2, 3)
        assert with_cores(16) == (4, 8)
    finally:
        default_workers.cache_clear()
