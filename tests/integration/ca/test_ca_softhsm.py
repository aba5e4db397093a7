"""The server CA over a real SoftHSM2 token: keys in the HSM, signing in the bounded executor,
rotation, and restart resume from the journal with the keys the token still holds."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from softhsm_token import SoftHsmToken

from plastron.clock import ManualClock
from plastron.hsm.keymanager import create_pkcs11_key_manager
from plastron.keymanager import KeyType
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid

pytestmark = pytest.mark.softhsm

TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


async def _bundle(store: MemoryCAStore) -> Bundle:
    data = await store.fetch_bundle(TD)
    assert data is not None
    return Bundle.from_json(data)


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384])
async def test_ca_in_softhsm_signs_rotates_and_resumes(
    softhsm_token: SoftHsmToken, key_type: KeyType
) -> None:
    clock = ManualClock(START)
    store = MemoryCAStore()
    config = CAConfig(trust_domain=TD, ca_key_type=key_type)
    km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    try:
        ca = await ServerCA.open(config=config, key_manager=km, store=store, clock=clock)
        leaf = ec.generate_private_key(ec.SECP256R1()).public_key()

        async def sign(i: int) -> None:
            sid = TD.spiffe_id(f"/w/{i}")
            chain = await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=leaf)
            roots = (await _bundle(store)).x509_certificates()
            assert validate_x509_svid(chain, roots, clock.now()) == sid

        await asyncio.gather(*(sign(i) for i in range(40)))
        token = await ca.sign_jwt_svid(spiffe_id=TD.spiffe_id("/w"), audience=["a"])
        keys = (await _bundle(store)).jwt_keys()
        validate_jwt_svid(token, audience="a", authorities=keys, now=clock.now())
        await ca.health_check()

        clock.advance(dt.timedelta(hours=21))
        await ca.rotator.rotate()
        await ca.rotator.rotate()
        rotated, _ = ca.x509_authority()
        kid = ca.jwt_key_id()
        bundle_bytes = await store.fetch_bundle(TD)
        await asyncio.gather(*(sign(i) for i in range(10)))
        ca.close()
    finally:
        km.close()

    # Restart: a new session on the same token finds the keys, the journal, the same CA.
    km2 = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    try:
        held_before = {info.key_id: info.fingerprint for info in km2.get_public_keys()}
        again = await ServerCA.open(config=config, key_manager=km2, store=store, clock=clock)
        assert again.x509_authority()[0] == rotated
        assert again.jwt_key_id() == kid
        assert await store.fetch_bundle(TD) == bundle_bytes
        held_after = {info.key_id: info.fingerprint for info in km2.get_public_keys()}
        assert held_after == held_before  # no key was generated or replaced
        again.close()
    finally:
        km2.close()
