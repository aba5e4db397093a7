"""Rotation across several CA lifetimes with a ManualClock: bundle content at each step,
which key signs, and no moment where a valid SVID's issuer is missing from the bundle."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from ca_unit_support import TD, ObservedKeyManager, akid, bundle_of, skid
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import ManualClock
from plastron.server.ca.config import CAConfig
from plastron.server.ca.journal import AuthorityStatus
from plastron.server.ca.rotator import activation_threshold, prepare_threshold
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid
from plastron.wire.keys import spki_der

TICK = dt.timedelta(minutes=10)
WORKLOAD = TD.spiffe_id("/workload")


def test_thresholds_follow_spire() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=24)
    assert prepare_threshold(start, end) == start + dt.timedelta(hours=12)
    assert activation_threshold(start, end) == start + dt.timedelta(hours=20)
    long_end = start + dt.timedelta(days=365)
    assert prepare_threshold(start, long_end) == long_end - dt.timedelta(days=30)
    assert activation_threshold(start, long_end) == long_end - dt.timedelta(days=7)


async def test_first_start_prepares_and_activates_one_of_each(
    ca: ServerCA, km: ObservedKeyManager, store: MemoryCAStore
) -> None:
    assert sorted(km.generated) == ["JWT-Signer-B", "x509-CA-B"]
    bundle = await bundle_of(store)
    cert, chain = ca.x509_authority()
    assert bundle.x509_certificates() == [cert]
    assert chain == []
    assert list(bundle.jwt_keys()) == [ca.jwt_key_id()]
    assert ca.manager.current_x509 is not None
    assert ca.manager.current_x509.status is AuthorityStatus.ACTIVE
    assert ca.manager.next_x509 is None


async def test_prepare_at_half_life_activate_at_five_sixths(
    ca: ServerCA, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first, _ = ca.x509_authority()
    first_kid = ca.jwt_key_id()
    clock.advance(dt.timedelta(hours=11, minutes=59))
    await ca.rotator.rotate()
    assert ca.manager.next_x509 is None
    clock.advance(dt.timedelta(minutes=2))  # past 12h
    await ca.rotator.rotate()
    prepared = ca.manager.next_x509
    assert prepared is not None and prepared.status is AuthorityStatus.PREPARED
    bundle = await bundle_of(store)
    # In the bundle before it signs anything; the old one still signs.
    assert bundle.x509_certificates() == [first, prepared.certificate]
    assert len(bundle.jwt_keys()) == 2
    assert ca.x509_authority()[0] == first
    assert ca.jwt_key_id() == first_kid
    clock.advance(dt.timedelta(hours=7, minutes=58))  # just before 20h
    await ca.rotator.rotate()
    assert ca.x509_authority()[0] == first
    clock.advance(dt.timedelta(minutes=2))
    await ca.rotator.rotate()
    assert ca.x509_authority()[0] == prepared.certificate
    assert ca.jwt_key_id() != first_kid
    assert ca.manager.next_x509 is not None
    assert ca.manager.next_x509.status is AuthorityStatus.OLD
    assert sorted(km.generated) == ["JWT-Signer-A", "JWT-Signer-B", "x509-CA-A", "x509-CA-B"]


async def test_several_rotations_never_leave_a_gap(
    ca: ServerCA, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issued: list[list[x509.Certificate]] = []
    tokens: list[str] = []
    signers: list[bytes] = []
    expiry_of: dict[bytes, dt.datetime] = {}
    end = clock.now() + dt.timedelta(days=5)
    while clock.now() < end:
        await ca.rotator.rotate()
        now = clock.now()
        chain = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=leaf_key)
        current = ca.x509_authority()[0]
        assert akid(chain[0]) == skid(current)  # always the current authority signs
        if not signers or signers[-1] != skid(current):
            signers.append(skid(current))
        issued.append(chain)
        tokens.append(await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["svc"]))
        bundle = await bundle_of(store)
        roots = bundle.x509_certificates()
        for root in roots:
            expiry_of[spki_der(root.public_key())] = root.not_valid_after_utc  # type: ignore[arg-type]
        for authority in bundle.jwt_authorities:
            assert authority.expires_at is not None
            expiry_of[spki_der(authority.public_key)] = authority.expires_at
        for svid in issued:
            if svid[0].not_valid_after_utc > now:
                assert validate_x509_svid(svid, roots, now) == WORKLOAD
        for token in tokens[-3:]:  # JWT-SVIDs live 5 minutes: the last few may be valid
            try:
                validate_jwt_svid(token, audience="svc", authorities=bundle.jwt_keys(), now=now)
            except Exception as exc:  # only expiry may fail, never a missing key
                assert "expired" in str(exc)
        assert all(c.not_valid_after_utc > now - dt.timedelta(hours=30) for c in roots)
        assert 1 <= len(roots) <= 4
        clock.advance(TICK)
    # ~5 days of 24h CAs rotating every ~12h: 9-10 distinct signing authorities.
    assert 8 <= len(signers) <= 11
    assert len(set(signers)) == len(signers)
    # Keys were destroyed only after their CA (and so every SVID it signed) expired.
    assert len(km.destroyed) >= 12
    for _key_id, public_key, when in km.destroyed:
        assert when >= expiry_of[spki_der(public_key)]
    # Slots alternate: keys were generated for both, repeatedly.
    assert km.generated.count("x509-CA-A") >= 4
    assert km.generated.count("x509-CA-B") >= 4


async def test_old_keys_are_destroyed_only_after_expiry(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    ca = await ServerCA.open(config=config, key_manager=km, store=store, clock=clock)
    first = ca.manager.current_x509
    assert first is not None
    clock.advance(dt.timedelta(hours=21))  # prepared and activated the second
    await ca.rotator.rotate()
    await ca.rotator.rotate()
    old = ca.manager.next_x509
    assert old is not None and old.status is AuthorityStatus.OLD
    assert old.certificate == first.certificate
    assert km.destroyed == []
    clock.set(first.not_after)
    await ca.rotator.rotate()
    destroyed_ids = [k for k, _, _ in km.destroyed]
    assert first.key_id in destroyed_ids
    assert not any(info.key_id == first.key_id for info in km.get_public_keys()) or (
        km.generated[-1] == first.key_id  # the slot may be re-prepared in the same tick
    )
    ca.close()


async def test_prune_drops_authorities_expired_over_a_day(
    ca: ServerCA, store: MemoryCAStore, clock: ManualClock
) -> None:
    first, _ = ca.x509_authority()
    clock.set(first.not_valid_after_utc + dt.timedelta(hours=23))
    for _ in range(3):
        await ca.rotator.rotate()
        clock.advance(dt.timedelta(minutes=1))
    assert first in (await bundle_of(store)).x509_certificates()
    clock.set(first.not_valid_after_utc + dt.timedelta(hours=30, minutes=1))
    await ca.rotator.rotate()
    bundle = await bundle_of(store)
    assert first not in bundle.x509_certificates()
    assert bundle.x509_certificates()


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_run_ticks_until_stopped_and_counts_failures(
    ca: ServerCA, km: ObservedKeyManager, clock: ManualClock
) -> None:
    stop = asyncio.Event()
    km.fail_generate = True
    clock.advance(dt.timedelta(hours=13))  # preparation is due
    task = asyncio.create_task(ca.rotator.run(stop, interval=dt.timedelta(milliseconds=5)))
    await _until(lambda: ca.rotator.consecutive_failures >= 2, "failing ticks")
    assert ca.manager.next_x509 is None
    km.fail_generate = False
    await _until(lambda: ca.manager.next_x509 is not None, "preparation")
    await _until(lambda: ca.rotator.consecutive_failures == 0, "recovery")
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert task.done() and task.exception() is None
