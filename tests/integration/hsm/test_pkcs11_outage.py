"""The HSM going away mid-run: signing fails closed with KeyManagerUnavailable, health says
not ready, and the same manager recovers when the token comes back."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from softhsm_token import SoftHsmToken

from plastron.clock import ManualClock
from plastron.errors import KeyManagerError, KeyManagerUnavailable
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.ids import TrustDomain

pytestmark = pytest.mark.softhsm
ECDSA = ec.ECDSA(hashes.SHA256())
TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _ec(key: object) -> ec.EllipticCurvePrivateKey:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _verify(key: ec.EllipticCurvePrivateKey) -> None:
    key.public_key().verify(key.sign(b"m", ECDSA), b"m", ECDSA)


def test_token_dir_removed_then_restored(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    key = _ec(manager.signer("x509-CA-A"))
    _verify(key)
    manager.health_check()
    with softhsm_token.removed():
        with pytest.raises(KeyManagerUnavailable, match="unreachable during sign"):
            key.sign(b"m", ECDSA)
        with pytest.raises(KeyManagerUnavailable):
            manager.health_check()
        with pytest.raises(KeyManagerUnavailable):
            manager.get_public_key("x509-CA-A")
    # back: the same manager and the same signer object work again
    manager.health_check()
    _verify(key)


def test_module_finalised_from_outside_recovers_transparently(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    key = _ec(manager.signer("x509-CA-A"))
    with PKCS11_LOCK:
        pkcs11.lib(softhsm_token.module_path).finalize()
    _verify(key)  # re-initialised, logged in again, key found again, one retry
    with PKCS11_LOCK:
        pkcs11.lib(softhsm_token.module_path).reinitialize()  # sessions die, module stays up
    _verify(key)
    manager.health_check()


def test_module_finalised_while_token_gone(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    key = _ec(manager.signer("x509-CA-A"))
    with softhsm_token.removed():
        with PKCS11_LOCK:
            pkcs11.lib(softhsm_token.module_path).finalize()
        for _ in range(2):  # stays unavailable, never falls back to anything
            with pytest.raises(KeyManagerUnavailable):
                key.sign(b"m", ECDSA)
        with pytest.raises(KeyManagerUnavailable):
            manager.health_check()
    manager.health_check()
    _verify(key)


def test_changed_pin_is_not_retried_until_fixed(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    key = _ec(manager.signer("x509-CA-A"))
    good = softhsm_token.pin_file.read_text()
    softhsm_token.pin_file.write_text("wrong-pin")
    try:
        with PKCS11_LOCK:
            pkcs11.lib(softhsm_token.module_path).reinitialize()
        with pytest.raises(KeyManagerError, match="wrong PIN"):
            key.sign(b"m", ECDSA)
        with pytest.raises(KeyManagerError, match="not retrying until it changes"):
            key.sign(b"m", ECDSA)
    finally:
        softhsm_token.pin_file.write_text(good)
    _verify(key)


def test_concurrent_signers_share_the_lock(manager: Pkcs11KeyManager) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.generate_key("JWT-Signer-A", KeyType.EC_P256)
    keys = [_ec(manager.signer("x509-CA-A")), _ec(manager.signer("JWT-Signer-A"))]
    errors: list[BaseException] = []

    def work(key: ec.EllipticCurvePrivateKey) -> None:
        try:
            for _ in range(300):
                _verify(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(keys[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


def test_rsa_4096(manager: Pkcs11KeyManager, tmp_path: Path) -> None:
    public = manager.generate_key("x509-CA-B", KeyType.RSA_4096)
    assert public.key_size == 4096
    assert [k.key_type for k in manager.get_public_keys()] == [KeyType.RSA_4096]


async def test_server_ca_unavailable_then_recovers(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    """Through the server CA: SVID signing and the CA health check fail with
    KeyManagerUnavailable (gRPC UNAVAILABLE, /ready false) and recover in place."""
    clock = ManualClock(START)
    ca = await ServerCA.open(
        config=CAConfig(trust_domain=TD), key_manager=manager, store=MemoryCAStore(), clock=clock
    )
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    sid = TD.spiffe_id("/w")
    try:
        await ca.health_check()
        with softhsm_token.removed():
            with pytest.raises(KeyManagerUnavailable):
                await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=leaf)
            with pytest.raises(KeyManagerUnavailable):
                await ca.health_check()
        await ca.health_check()
        chain = await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=leaf)
        chain[0].verify_directly_issued_by(ca.x509_authority()[0])
    finally:
        ca.close()
