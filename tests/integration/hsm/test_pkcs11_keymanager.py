"""The pkcs11 KeyManager against a real SoftHSM2 token."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from softhsm_token import SoftHsmToken

from plastron.errors import InvalidArgument, KeyManagerError, NotFound
from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager
from plastron.hsm.keys import HsmEllipticCurvePrivateKey
from plastron.keymanager import KeyManager, KeyType
from plastron.spiffe.ids import TrustDomain
from tests.pki import self_signed

TD = TrustDomain("example.org")

pytestmark = pytest.mark.softhsm


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    return self_signed(
        "hsm test CA",
        key,
        start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        lifetime=dt.timedelta(days=1),
        backdate=dt.timedelta(0),
        serial=1,
        ca=True,
    ).cert


def test_is_a_keymanager(manager: Pkcs11KeyManager) -> None:
    assert isinstance(manager, KeyManager)
    assert manager.blocking is True


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384])
def test_ec_key_signs_certificate_and_jwt(manager: Pkcs11KeyManager, key_type: KeyType) -> None:
    public = manager.generate_key("x509-CA-A", key_type)
    key = manager.signer("x509-CA-A")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == public.public_numbers()
    cert = _self_signed(key)
    cert.verify_directly_issued_by(cert)
    alg = "ES256" if key_type is KeyType.EC_P256 else "ES384"
    token = jwt.encode({"sub": "spiffe://example.org/w"}, key, algorithm=alg, headers={"kid": "k"})
    assert jwt.decode(token, public, algorithms=[alg])["sub"] == "spiffe://example.org/w"


def test_ec_prehashed_and_raw(manager: Pkcs11KeyManager) -> None:
    public = manager.generate_key("JWT-Signer-A", KeyType.EC_P256)
    key = manager.signer("JWT-Signer-A")
    assert isinstance(key, HsmEllipticCurvePrivateKey)
    h = hashes.Hash(hashes.SHA256())
    h.update(b"payload")
    digest = h.finalize()
    sig = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(sig, b"tampered", ec.ECDSA(hashes.SHA256()))
    raw = key.sign_raw(b"payload", hashes.SHA256())
    assert len(raw) == 64


def test_rsa_2048_pkcs1_and_pss(manager: Pkcs11KeyManager) -> None:
    public = manager.generate_key("x509-CA-B", KeyType.RSA_2048)
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    key = manager.signer("x509-CA-B")
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = _self_signed(key)
    cert.verify_directly_issued_by(cert)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    sig = key.sign(b"msg", pss, hashes.SHA256())
    public.verify(sig, b"msg", pss, hashes.SHA256())
    sig = key.sign(b"msg", padding.PKCS1v15(), hashes.SHA384())
    public.verify(sig, b"msg", padding.PKCS1v15(), hashes.SHA384())
    for alg in ("RS256", "PS256"):
        token = jwt.encode({"sub": "x"}, key, algorithm=alg)
        assert jwt.decode(token, public, algorithms=[alg])["sub"] == "x"


def test_keys_survive_a_new_manager(softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager) -> None:
    public = manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.close()
    again = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    try:
        assert again.get_public_key("x509-CA-A") == public
        assert [k.key_id for k in again.get_public_keys()] == ["x509-CA-A"]
    finally:
        again.close()


def test_generate_replaces_and_stale_signer_refuses(manager: Pkcs11KeyManager) -> None:
    first = manager.generate_key("x509-CA-A", KeyType.EC_P256)
    old_signer = manager.signer("x509-CA-A")
    assert isinstance(old_signer, ec.EllipticCurvePrivateKey)
    second = manager.generate_key("x509-CA-A", KeyType.EC_P256)
    assert first != second
    assert len(manager.get_public_keys()) == 1
    with pytest.raises(KeyManagerError, match="was replaced"):
        old_signer.sign(b"x", ec.ECDSA(hashes.SHA256()))


def test_destroy_and_not_found(manager: Pkcs11KeyManager) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    manager.destroy_key("x509-CA-A")
    manager.destroy_key("x509-CA-A")  # no-op when absent
    with pytest.raises(NotFound, match="x509-CA-A"):
        manager.get_public_key("x509-CA-A")
    with pytest.raises(NotFound):
        manager.signer("x509-CA-A")
    assert manager.get_public_keys() == []


def test_servers_and_trust_domains_are_separate(
    softhsm_token: SoftHsmToken, manager: Pkcs11KeyManager
) -> None:
    manager.generate_key("x509-CA-A", KeyType.EC_P256)
    other = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s2")
    try:
        assert other.get_public_keys() == []
        with pytest.raises(NotFound):
            other.get_public_key("x509-CA-A")
    finally:
        other.close()


def test_bad_key_ids_refused(manager: Pkcs11KeyManager) -> None:
    for bad in ("", "a/b", "x" * 129, "a#pending", "ü"):
        with pytest.raises(InvalidArgument, match="key id"):
            manager.generate_key(bad, KeyType.EC_P256)
