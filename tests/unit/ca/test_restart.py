"""Restart resumes from the journal: same CA, same bundle, no new key."""

from __future__ import annotations

import datetime as dt

from ca_unit_support import TD, ObservedKeyManager, bundle_of, open_ca

from plastron.clock import ManualClock
from plastron.server.ca.config import CAConfig
from plastron.server.ca.journal import AuthorityStatus, Journal
from plastron.server.ca.store import MemoryCAStore
from plastron.wire.keys import spki_der


async def test_restart_resumes_same_ca_and_bundle_without_new_keys(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    cert, _ = first.x509_authority()
    kid = first.jwt_key_id()
    bundle_bytes = await store.fetch_bundle(TD)
    first.close()
    generated = list(km.generated)

    clock.advance(dt.timedelta(hours=1))
    # A new process: fresh ServerCA over the same key store and datastore.
    second = await open_ca(config, ObservedKeyManager(km.inner, clock=clock), store, clock)
    assert second.x509_authority()[0] == cert
    assert second.jwt_key_id() == kid
    assert await store.fetch_bundle(TD) == bundle_bytes
    assert km.generated == generated
    assert second.manager.journal == first.manager.journal
    second.close()


async def test_restart_between_prepare_and_activate_keeps_the_prepared_authority(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    clock.advance(dt.timedelta(hours=13))
    await first.rotator.rotate()
    prepared = first.manager.next_x509
    prepared_jwt = first.manager.next_jwt
    assert prepared is not None and prepared.status is AuthorityStatus.PREPARED
    assert prepared_jwt is not None
    first.close()

    km2 = ObservedKeyManager(km.inner, clock=clock)
    second = await open_ca(config, km2, store, clock)
    assert second.manager.next_x509 == prepared
    clock.advance(dt.timedelta(hours=8))  # past activation
    await second.rotator.rotate()
    assert second.x509_authority()[0] == prepared.certificate
    assert second.jwt_key_id() == prepared_jwt.kid
    assert km2.generated == []  # activation reused the prepared keys
    second.close()


async def test_restart_after_activation_finds_journal_by_new_active_id(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    clock.advance(dt.timedelta(hours=21))
    await first.rotator.rotate()
    await first.rotator.rotate()
    active = first.manager.current_x509
    assert active is not None
    stored = await store.fetch_ca_journal(active.authority_id)
    assert stored is not None
    assert Journal.from_json(stored.data) == first.manager.journal
    first.close()
    km2 = ObservedKeyManager(km.inner, clock=clock)
    second = await open_ca(config, km2, store, clock)
    assert second.x509_authority()[0] == active.certificate
    assert second.manager.next_x509 is not None
    assert second.manager.next_x509.status is AuthorityStatus.OLD
    assert km2.generated == []
    second.close()


async def test_lost_keys_mean_a_fresh_ca(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    old_cert, _ = first.x509_authority()
    first.close()
    km2 = ObservedKeyManager(clock=clock)  # the memory KeyManager lost its keys
    second = await open_ca(config, km2, store, clock)
    assert second.x509_authority()[0] != old_cert
    assert sorted(km2.generated) == ["JWT-Signer-B", "x509-CA-B"]
    # The old authority stays trusted until it expires: SVIDs it signed remain valid.
    assert old_cert in (await bundle_of(store)).x509_certificates()
    second.close()


async def test_restart_after_everything_expired_starts_over(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    old_cert, _ = first.x509_authority()
    first.close()
    clock.advance(dt.timedelta(days=3))
    km2 = ObservedKeyManager(km.inner, clock=clock)
    second = await open_ca(config, km2, store, clock)
    cert, _ = second.x509_authority()
    assert cert != old_cert
    assert cert.not_valid_after_utc > clock.now()
    assert km2.generated  # new keys for the new authorities
    second.close()


async def test_bundle_lost_while_down_is_restored(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    cert, _ = first.x509_authority()
    kid = first.jwt_key_id()
    first.close()
    empty = MemoryCAStore()
    row = await store.fetch_ca_journal(first.manager.journal.active_x509_authority_id())
    assert row is not None
    await empty.set_ca_journal(row)  # the journal survived; the bundle row did not
    second = await open_ca(config, ObservedKeyManager(km.inner, clock=clock), empty, clock)
    bundle = await bundle_of(empty)
    assert bundle.x509_certificates() == [cert]
    assert list(bundle.jwt_keys()) == [kid]
    second.close()


async def test_keys_of_authorities_that_expired_while_down_are_destroyed(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    first = await open_ca(config, km, store, clock)
    old = first.manager.current_x509
    assert old is not None
    first.close()
    clock.advance(dt.timedelta(days=3))
    km2 = ObservedKeyManager(km.inner, clock=clock)
    second = await open_ca(config, km2, store, clock)
    destroyed = {(key_id, spki_der(pub)) for key_id, pub, _ in km2.destroyed}
    assert (old.key_id, spki_der(old.public_key)) in destroyed
    # The fresh authorities' keys are intact.
    current = second.manager.current_x509
    assert current is not None
    assert spki_der(km2.get_public_key(current.key_id)) == spki_der(current.public_key)
    second.close()
