"""CA worker processes that sign with their own SoftHSM2 session (server/ca/batch_signing.py and
worker_signing.py): the leaves are the ones the server would sign itself, refused CSRs fail
alone, CA rotation (slot keys regenerated) is followed, a key that does not match the CA
certificate is refused, and a worker that dies or cannot log in leaves the signing to the
server."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from softhsm_token import SoftHsmToken

from plastron.clock import ManualClock
from plastron.errors import InvalidArgument, KeyManagerUnavailable, PlastronError
from plastron.hsm.config import Pkcs11Config, parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager, open_pkcs11_key_manager
from plastron.keymanager import (
    KeyInfo,
    KeyManager,
    KeyManagerOpener,
    KeyType,
    MemoryKeyManager,
    PrivateKey,
    PublicKey,
    worker_opener,
)
from plastron.server.ca.batch_signing import SignedX509Svid, WorkloadCsr
from plastron.server.ca.config import CAConfig
from plastron.server.ca.csr import check_csrs
from plastron.server.ca.leaves import LeafPlan
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.server.ca.worker_signing import LeafOrder, SignTask, WorkerSigner
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.integration.server.server_harness import make_csr
from tests.unit.spiffe.spiffe_pki import make_root

pytestmark = pytest.mark.softhsm

TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
Result = SignedX509Svid | PlastronError


async def open_ca(manager: KeyManager, workers: int = 2) -> ServerCA:
    return await ServerCA.open(
        config=CAConfig(trust_domain=TD, worker_processes=workers),
        key_manager=manager,
        store=MemoryCAStore(),
        clock=ManualClock(START),
    )


@pytest.fixture
async def ca(manager: Pkcs11KeyManager) -> AsyncIterator[ServerCA]:
    server_ca = await open_ca(manager)
    yield server_ca
    server_ca.close()


def pkcs11_config(token: SoftHsmToken) -> Pkcs11Config:
    return parse_pkcs11_config(token.plugin_data())


class Batch:
    """n workload requests with their keys and CSRs; item ``bad`` carries a tampered CSR."""

    def __init__(self, n: int, bad: int | None = None) -> None:
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]
        ders = [make_csr(k) for k in self.keys]
        if bad is not None:
            tampered = bytearray(ders[bad])
            tampered[-5] ^= 0xFF  # inside the signature
            ders[bad] = bytes(tampered)
        self.requests = [
            WorkloadCsr(
                TD.spiffe_id(f"/w/{i}"),
                der,
                f"params[{i}].csr",
                600,
                (f"w{i}.example.org",) if i % 3 == 0 else (),
            )
            for i, der in enumerate(ders)
        ]


async def sign_in_workers(ca: ServerCA, batch: Batch, *, here: bool = False) -> list[Result]:
    """The batch through the CA's workers; ``here``: whether the server is expected to sign
    (some of) it itself, because a worker could not."""
    assert ca.batches.workers_sign(len(batch.requests)), "an HSM CA signs batches in workers"
    signed_here = ca.batches.signed_here
    async with contextlib.aclosing(ca.sign_workload_x509_svids(batch.requests)) as results:
        out = [result async for result in results]
    assert (ca.batches.signed_here > signed_here) == here, ca.batches.signed_here
    return out


def check_leaves(ca: ServerCA, batch: Batch, results: list[Result], bad: set[int]) -> None:
    issuer = ca.x509_authority()[0]
    for i, result in enumerate(results):
        if i in bad:
            assert isinstance(result, InvalidArgument)
            continue
        assert isinstance(result, SignedX509Svid), result
        cert = x509.load_der_x509_certificate(result.chain[0])
        cert.verify_directly_issued_by(issuer)
        assert cert.public_key().public_bytes(*SPKI) == batch.keys[i].public_key().public_bytes(
            *SPKI
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        request = batch.requests[i]
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(request.spiffe_id)]
        assert tuple(san.get_values_for_type(x509.DNSName)) == request.dns_names
        assert cert.not_valid_after_utc == result.not_after


async def test_workers_sign_what_the_server_would(ca: ServerCA) -> None:
    batch = Batch(20, bad=7)
    results = await sign_in_workers(ca, batch)
    workers = ca.batches.pool.workers()
    assert len(workers) == 2 and all(w.alive for w in workers)
    check_leaves(ca, batch, results, bad={7})
    # the refusal reads exactly as the server's own check
    request = batch.requests[7]
    assert str(results[7]) == str(check_csrs([(request.csr, request.field)])[0])
    # same leaf as the in-process path, serial and signature aside
    request = batch.requests[3]
    [local, *_] = await ca.sign_workload_x509_svid(
        spiffe_id=request.spiffe_id,
        public_key=batch.keys[3].public_key(),
        ttl=request.ttl,
        dns_names=request.dns_names,
    )
    result = results[3]
    assert isinstance(result, SignedX509Svid)
    remote = x509.load_der_x509_certificate(result.chain[0])
    assert list(remote.extensions) == list(local.extensions)
    assert remote.subject == local.subject and remote.issuer == local.issuer
    assert remote.not_valid_after_utc == local.not_valid_after_utc == result.not_after
    assert remote.not_valid_before_utc == local.not_valid_before_utc


async def test_rotation_and_regenerated_slots_are_followed(ca: ServerCA) -> None:
    first = ca.x509_authority()[0]
    first_key_id = ca.manager.current_x509.key_id  # type: ignore[union-attr]
    check_leaves(ca, batch := Batch(16), await sign_in_workers(ca, batch), set())
    clock = ca._clock
    assert isinstance(clock, ManualClock)
    seen = {first.serial_number}
    # rotate until the first slot is current again: the server regenerated its key meanwhile
    for _ in range(12):
        clock.advance(dt.timedelta(hours=8))
        await ca.rotator.rotate()
        current = ca.x509_authority()[0]
        if current.serial_number in seen:
            continue
        seen.add(current.serial_number)
        batch = Batch(16)
        check_leaves(ca, batch, await sign_in_workers(ca, batch), set())
        if ca.manager.current_x509.key_id == first_key_id:  # type: ignore[union-attr]
            break
    else:
        pytest.fail("the first slot never became current again")
    assert current.public_key() != first.public_key()


def test_key_that_does_not_match_the_ca_certificate_is_refused(
    manager: Pkcs11KeyManager, ca: ServerCA
) -> None:
    key_id = ca.manager.current_x509.key_id  # type: ignore[union-attr]
    stranger = make_root(ec.generate_private_key(ec.SECP256R1()))  # a CA with another key
    signer = WorkerSigner(manager.worker_opener())
    order = LeafOrder(
        make_csr(ec.generate_private_key(ec.SECP256R1())),
        "params[0].csr",
        LeafPlan(SpiffeId(TD, "/w"), START + dt.timedelta(hours=1)),
    )
    task = SignTask(stranger.public_bytes(serialization.Encoding.DER), key_id, START, (order,))
    answer = signer.run(task)
    assert isinstance(answer, tuple)
    assert answer[0] == "KeyManagerError" and "does not match the CA certificate" in answer[1]
    good = task._replace(issuer=ca.x509_authority()[0].public_bytes(serialization.Encoding.DER))
    [leaf] = signer.run(good)
    assert isinstance(leaf, bytes)
    x509.load_der_x509_certificate(leaf).verify_directly_issued_by(ca.x509_authority()[0])


def test_worker_refuses_an_order_for_a_reserved_id(manager: Pkcs11KeyManager, ca: ServerCA) -> None:
    """The worker holds the CA key: it refuses the server's ID or an agent's on its own,
    whatever order reaches it."""
    signer = WorkerSigner(manager.worker_opener())
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    ids = [SpiffeId(TD, "/spire/server"), SpiffeId(TD, "/spire/agent/x/y"), SpiffeId(TD, "/w")]
    orders = tuple(
        LeafOrder(csr, f"params[{i}].csr", LeafPlan(sid, START + dt.timedelta(hours=1)))
        for i, sid in enumerate(ids)
    )
    issuer = ca.x509_authority()[0].public_bytes(serialization.Encoding.DER)
    key_id = ca.manager.current_x509.key_id  # type: ignore[union-attr]
    answer = signer.run(SignTask(issuer, key_id, START, orders))
    assert isinstance(answer, list)
    for refused, sid in zip(answer[:2], ids, strict=False):
        assert refused == ("InvalidArgument", refused[1]) and str(sid) in refused[1]
        assert "reserved /spire namespace" in refused[1]
    assert isinstance(answer[2], bytes)


def test_a_failed_open_is_retried_with_backoff(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    """A refused PIN is not tried on every batch (that would lock the token's user PIN)."""
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("999999")
    wrong.chmod(0o600)
    calls: list[int] = []
    now = [100.0]
    config = dataclasses.replace(pkcs11_config(softhsm_token), pin_file=str(wrong))

    def opener() -> Pkcs11KeyManager:
        calls.append(1)
        return open_pkcs11_key_manager(config, trust_domain=TD, server_id="s1")

    signer = WorkerSigner(opener, clock=lambda: now[0])
    task = SignTask(b"", "x509-CA-A", START, ())
    for expected_calls, advance in [(1, 1.0), (1, 5.0), (2, 9.0), (2, 1.5), (3, 0.0)]:
        answer = signer.run(task)
        assert isinstance(answer, tuple) and answer[0] == "KeyManagerUnavailable", answer
        assert "cannot open the key store" in answer[1] and "PIN" in answer[1]
        assert len(calls) == expected_calls
        now[0] += advance


class OffersOpener:
    """The token's KeyManager, offering the workers another way to open it."""

    def __init__(self, inner: Pkcs11KeyManager, opener: KeyManagerOpener) -> None:
        self.inner = inner
        self.blocking = True
        self._opener = opener

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        return self.inner.generate_key(key_id, key_type)

    def get_public_key(self, key_id: str) -> PublicKey:
        return self.inner.get_public_key(key_id)

    def get_public_keys(self) -> list[KeyInfo]:
        return self.inner.get_public_keys()

    def signer(self, key_id: str) -> PrivateKey:
        return self.inner.signer(key_id)

    def destroy_key(self, key_id: str) -> None:
        self.inner.destroy_key(key_id)

    def worker_opener(self) -> KeyManagerOpener:
        return self._opener


async def test_worker_that_cannot_log_in_leaves_signing_to_the_server(
    softhsm_token: SoftHsmToken,
    manager: Pkcs11KeyManager,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("999999")
    wrong.chmod(0o600)
    opener = functools.partial(
        open_pkcs11_key_manager,
        dataclasses.replace(pkcs11_config(softhsm_token), pin_file=str(wrong)),
        trust_domain=TD,
        server_id="s1",
    )
    ca = await open_ca(OffersOpener(manager, opener), workers=1)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                batch = Batch(20, bad=2)
                check_leaves(ca, batch, await sign_in_workers(ca, batch, here=True), {2})
    finally:
        ca.close()
    warnings = [r.getMessage() for r in caplog.records if "signing worker" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not once per chunk
    assert "wrong PIN" in warnings[0] and softhsm_token.pin not in caplog.text


async def test_killed_worker_is_survived(ca: ServerCA) -> None:
    batch = Batch(16)
    check_leaves(ca, batch, await sign_in_workers(ca, batch), set())
    victim = ca.batches.pool.workers()[0].pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    # the first run finds it dead and signs its share here; the second has a fresh pool
    for here in (True, False):
        batch = Batch(40, bad=5)
        check_leaves(ca, batch, await sign_in_workers(ca, batch, here=here), {5})
    workers = ca.batches.pool.workers()
    assert (
        len(workers) == 2
        and all(w.alive for w in workers)
        and victim not in {w.pid for w in workers}
    )


async def test_unavailable_token_fails_the_batch_then_recovers(
    softhsm_token: SoftHsmToken, ca: ServerCA
) -> None:
    check_leaves(ca, batch := Batch(16), await sign_in_workers(ca, batch), set())
    with softhsm_token.removed():
        # as when the server signs itself: every item fails UNAVAILABLE, naming the token
        results = await sign_in_workers(ca, Batch(16))
        for result in results:
            assert isinstance(result, KeyManagerUnavailable), result
            assert softhsm_token.token_label in str(result)
    # SoftHSM2 rewrites a token's file at every login: while the workers log in again, one
    # may miss the token for a moment (NoSuchToken, UNAVAILABLE). An agent retries; so do we.
    for _attempt in range(3):
        batch = Batch(16)
        results = await sign_in_workers(ca, batch)
        if not any(isinstance(result, KeyManagerUnavailable) for result in results):
            break
    check_leaves(ca, batch, results, set())
    workers = ca.batches.pool.workers()
    assert len(workers) == 2 and all(w.alive for w in workers)


def test_only_key_stores_a_worker_can_open_offer_an_opener(manager: Pkcs11KeyManager) -> None:
    assert worker_opener(MemoryKeyManager()) is None
    opener = worker_opener(manager)
    assert opener is not None
    again = opener()
    assert isinstance(again, Pkcs11KeyManager) and again is not manager
    assert again.label_for("x509-CA-A") == manager.label_for("x509-CA-A")
    again.close()  # the session is shared in this process and counted: manager keeps it
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
