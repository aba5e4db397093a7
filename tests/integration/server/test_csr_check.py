"""CSR checks in worker processes (server/api/csr_check.py): same answers as inline, small
batches stay inline, a killed worker is survived and replaced, close() leaves no process."""

from __future__ import annotations

import itertools
import os
import signal
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import PlastronError
from plastron.server.api.csr_check import (
    CHUNK,
    MIN_POOLED,
    CheckedKey,
    CsrChecker,
    _even_chunks,
    _Worker,
    check_inline,
    default_workers,
)

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def csr_der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def mixed_batch() -> list[tuple[bytes, str]]:
    good = [csr_der(ec.generate_private_key(ec.SECP256R1())) for _ in range(20)]
    good.append(csr_der(ec.generate_private_key(ec.SECP384R1())))
    good.append(csr_der(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    tampered = bytearray(good[0])
    tampered[-5] ^= 0xFF  # inside the signature
    weak = csr_der(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    ders = [*good[:10], b"", bytes(tampered), *good[10:], b"not a csr", weak]
    return [(der, f"params[{i}].csr") for i, der in enumerate(ders)]


def summary(keys: list[CheckedKey]) -> list[bytes | str]:
    return [
        f"{type(k).__name__}: {k}" if isinstance(k, PlastronError) else k.public_bytes(*SPKI)
        for k in keys
    ]


async def checked(checker: CsrChecker, items: list[tuple[bytes, str]]) -> list[CheckedKey]:
    out: list[CheckedKey] = []
    for chunk in checker.check(items):
        out += await chunk
    return out


async def test_workers_answer_exactly_as_inline() -> None:
    items = mixed_batch()
    checker = CsrChecker(workers=2)
    try:
        pooled = await checked(checker, items)
        assert len(checker._pool) == 2 and all(w.process.is_alive() for w in checker._pool)
    finally:
        checker.close()
    assert summary(pooled) == summary(check_inline(items))
    errors = [k for k in pooled if isinstance(k, PlastronError)]
    assert [str(e) for e in errors] == [
        "params[10].csr: missing CSR",
        "params[11].csr: CSR signature is invalid",
        "params[24].csr: malformed CSR (not DER PKCS#10)",
        "params[25].csr: RSA key of 1024 bits is below 2048",
    ]


async def test_small_batches_are_checked_inline() -> None:
    checker = CsrChecker(workers=2)
    try:
        items = mixed_batch()[: MIN_POOLED - 1]
        assert summary(await checked(checker, items)) == summary(check_inline(items))
        assert checker._pool == []
    finally:
        checker.close()


async def test_a_killed_worker_is_survived_and_replaced() -> None:
    items = mixed_batch()
    checker = CsrChecker(workers=1)
    try:
        await checked(checker, items)
        (first,) = checker._pool
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.join(timeout=10)
        # The chunks sent to the dead worker are checked inline; nothing is lost.
        assert summary(await checked(checker, items)) == summary(check_inline(items))
        assert summary(await checked(checker, items)) == summary(check_inline(items))
        (second,) = checker._pool
        assert second is not first and second.process.is_alive()
    finally:
        checker.close()


async def test_close_stops_every_worker() -> None:
    checker = CsrChecker(workers=2)
    await checked(checker, mixed_batch())
    processes = [w.process for w in checker._pool]
    checker.close()
    assert all(not p.is_alive() for p in processes)
    items = mixed_batch()
    assert summary(await checked(checker, items)) == summary(check_inline(items))  # inline now


@pytest.mark.parametrize("workers", [0])
async def test_no_workers_means_inline(workers: int) -> None:
    checker = CsrChecker(workers=workers)
    items = mixed_batch()
    assert summary(await checked(checker, items)) == summary(check_inline(items))
    assert checker._pool == []


async def test_a_full_batch_keeps_its_order() -> None:
    """500 items (the API's limit) through 2 workers, at most MAX_SENT chunks in each pipe."""
    key = ec.generate_private_key(ec.SECP256R1())
    ders = [csr_der(ec.generate_private_key(ec.SECP256R1())) for _ in range(499)]
    ders.insert(321, csr_der(key)[:-3])  # truncated: refused in its own slot
    items = [(der, f"params[{i}].csr") for i, der in enumerate(ders)]
    checker = CsrChecker(workers=2)
    try:
        chunks = checker.check(items)
        for worker in checker._pool:  # the rest waits on this side, so no pipe ever fills
            assert len(worker.waiting) == _Worker.MAX_SENT and worker.backlog
        out: list[CheckedKey] = []
        for chunk in chunks:
            out += await chunk
            assert all(len(w.waiting) <= _Worker.MAX_SENT for w in checker._pool)
        assert summary(out) == summary(check_inline(items))
        assert all(not w.waiting and not w.backlog for w in checker._pool)
    finally:
        checker.close()


@pytest.mark.parametrize("n", [16, 17, 20, 31, 50, 99, 100, 500])
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
def test_signing_chunks_share_a_batch_evenly(n: int, workers: int) -> None:
    bounds = _even_chunks(n, workers)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert max(sizes) <= 2 * CHUNK
    if n // workers >= CHUNK // 2:  # enough for every worker: each gets the same share
        assert len(bounds) % workers == 0, bounds


def test_the_workers_sign_only_with_a_key_opener_a_pool_and_a_large_batch() -> None:
    def opener() -> Any:
        raise AssertionError("signs() decides without opening anything")

    assert not CsrChecker(workers=2).signs(100)  # memory, disk, TPM keys: no opener
    assert not CsrChecker(workers=0, key_opener=opener).signs(100)  # a single core
    checker = CsrChecker(workers=2, key_opener=opener)
    assert not checker.signs(MIN_POOLED - 1)
    assert checker.signs(MIN_POOLED)
    checker.close()
    assert not checker.signs(MIN_POOLED)
    assert checker._pool == []  # nothing was started


def test_default_pool_follows_the_key_opener(monkeypatch: pytest.MonkeyPatch) -> None:
    def with_cores(n: int) -> tuple[int, int]:
        monkeypatch.setattr(os, "cpu_count", lambda: n)
        default_workers.cache_clear()
        return CsrChecker().workers, CsrChecker(key_opener=lambda: None).workers

    try:
        # (checking only: one per core beyond the loop's, at most 4; signing: one per core,
        # at most 8; a single core: none)
        assert with_cores(1) == (0, 0)
        assert with_cores(3) == (2, 3)
        assert with_cores(16) == (4, 8)
    finally:
        default_workers.cache_clear()
