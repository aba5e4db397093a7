"""The server CA on the real SQL DataStore (SQLite file): journal and bundle persisted in the
database, restart resumes from them, several rotations keep every SVID verifiable."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import ManualClock
from plastron.keymanager import DiskKeyManager, KeyInfo, KeyType, PrivateKey, PublicKey
from plastron.server.ca.config import CAConfig
from plastron.server.ca.journal import Journal
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import DataStoreCAStore
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import validate_x509_svid

TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class CountingKeyManager:
    def __init__(self, inner: DiskKeyManager) -> None:
        self.inner = inner
        self.generated: list[str] = []

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        self.generated.append(key_id)
        return self.inner.generate_key(key_id, key_type)

    def get_public_key(self, key_id: str) -> PublicKey:
        return self.inner.get_public_key(key_id)

    def get_public_keys(self) -> list[KeyInfo]:
        return self.inner.get_public_keys()

    def signer(self, key_id: str) -> PrivateKey:
        return self.inner.signer(key_id)

    def destroy_key(self, key_id: str) -> None:
        self.inner.destroy_key(key_id)


async def test_journal_and_bundle_in_sqlite_survive_restarts(tmp_path: Path) -> None:
    clock = ManualClock(START)
    sql = SqlConfig(connection_string=str(tmp_path / "ds.sqlite3"))
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    config = CAConfig(trust_domain=TD)
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    issued = []
    carried_over = 0  # SVIDs from an earlier process lifetime still verified after restart
    for step in range(6):  # six process lifetimes, 9h apart: several rotations in all
        ds = await open_datastore(sql, clock=clock)
        km = CountingKeyManager(DiskKeyManager(keys_dir))
        store = DataStoreCAStore(ds)
        ca = await ServerCA.open(config=config, key_manager=km, store=store, clock=clock)
        if step > 0:
            # Nothing was due at start-up, or at most the step the clock made due.
            assert len(km.generated) <= 2
        active = ca.manager.current_x509
        assert active is not None
        row = await ds.fetch_ca_journal(active.authority_id)
        assert row is not None and Journal.from_json(row.data) == ca.manager.journal
        # 10h SVIDs outlive the 9h step: the previous one must still verify after a restart.
        chain = await ca.sign_workload_x509_svid(
            spiffe_id=TD.spiffe_id("/w"), public_key=leaf, ttl=10 * 3600
        )
        issued.append(chain)
        data = await store.fetch_bundle(TD)
        assert data is not None
        roots = Bundle.from_json(data).x509_certificates()
        live = [c for c in issued if c[0].not_valid_after_utc > clock.now()]
        for svid in live:
            validate_x509_svid(svid, roots, clock.now())
        carried_over += len(live) - 1
        ca.close()
        await ds.close()
        # A restart with no time passing changes nothing at all.
        ds = await open_datastore(sql, clock=clock)
        km2 = CountingKeyManager(DiskKeyManager(keys_dir))
        again = await ServerCA.open(
            config=config, key_manager=km2, store=DataStoreCAStore(ds), clock=clock
        )
        assert km2.generated == []
        assert again.x509_authority() == ca.x509_authority()
        assert again.jwt_key_id() == ca.jwt_key_id()
        assert await ds.fetch_bundle(TD) == data
        again.close()
        await ds.close()
        clock.advance(dt.timedelta(hours=9))
    assert carried_over >= 3
