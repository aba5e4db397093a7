"""UpstreamAuthority "pkcs11": an HSM-held root signs each server CA; the bundle carries it."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from softhsm_token import SoftHsmToken

from plastron.clock import ManualClock
from plastron.errors import ConfigError, InvalidArgument, KeyManagerError
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager
from plastron.hsm.session import open_token_session
from plastron.hsm.upstream import Pkcs11UpstreamAuthority, create_pkcs11_upstream_authority
from plastron.keymanager import KeyManager, KeyType, MemoryKeyManager
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import validate_x509_svid
from plastron.upstream import UpstreamAuthority, UpstreamUnsupported

pytestmark = pytest.mark.softhsm
TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _upstream(token: SoftHsmToken, clock: ManualClock, **extra: object) -> Pkcs11UpstreamAuthority:
    return create_pkcs11_upstream_authority(
        token.plugin_data(**extra), trust_domain=TD, clock=clock
    )


async def test_root_is_created_once_and_reused(softhsm_token: SoftHsmToken) -> None:
    clock = ManualClock(START)
    first = _upstream(softhsm_token, clock)
    try:
        assert isinstance(first, UpstreamAuthority)
        root = first.root_certificate
        root.verify_directly_issued_by(root)
        assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
        assert root.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
        key = ec.generate_private_key(ec.SECP256R1())
        chain, roots = await first.mint_x509_ca(_csr(key), dt.timedelta(hours=24))
        assert roots == [root] and len(chain) == 1
        chain[0].verify_directly_issued_by(root)
        bc = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca is True
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
        with pytest.raises(UpstreamUnsupported):
            await first.publish_jwt_key(None)  # type: ignore[arg-type]
        first.health_check()
    finally:
        first.close()
    clock.advance(dt.timedelta(days=30))
    again = _upstream(softhsm_token, clock)  # a restart: same root, no new key
    try:
        assert again.root_certificate == root
    finally:
        again.close()
    listing = subprocess.run(
        ["pkcs11-tool", "--module", softhsm_token.module_path, "--token-label",
         softhsm_token.token_label, "--login", "--pin", softhsm_token.pin, "--list-objects"],
        capture_output=True, text=True, env=softhsm_token.env(), check=True,
    )  # fmt: skip
    assert listing.stdout.count("plastron/example.org/upstream-root") == 3  # priv, pub, cert


async def test_mint_rejects_bad_requests(softhsm_token: SoftHsmToken) -> None:
    clock = ManualClock(START)
    upstream = _upstream(softhsm_token, clock, root_ttl="48h")
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        good = _csr(key)
        der = bytearray(good.public_bytes(serialization.Encoding.DER))
        der[-3] ^= 0x01  # inside the signature
        with pytest.raises(InvalidArgument, match="CSR signature does not verify"):
            await upstream.mint_x509_ca(x509.load_der_x509_csr(bytes(der)), dt.timedelta(hours=1))
        with pytest.raises(InvalidArgument, match="ttl must be positive"):
            await upstream.mint_x509_ca(good, dt.timedelta(0))
        chain, _ = await upstream.mint_x509_ca(good, dt.timedelta(days=30))
        # never outlives the root
        assert chain[0].not_valid_after_utc <= upstream.root_certificate.not_valid_after_utc
    finally:
        upstream.close()


def test_config_errors(softhsm_token: SoftHsmToken) -> None:
    clock = ManualClock(START)
    with pytest.raises(ConfigError, match="not both"):
        _upstream(softhsm_token, clock, root_key_id="a", root_key_label="b")
    with pytest.raises(ConfigError, match="key id"):
        _upstream(softhsm_token, clock, root_key_id="a/b")
    with pytest.raises(ConfigError, match="unknown key type"):
        _upstream(softhsm_token, clock, root_key_type="ed25519")
    unknown = 'unknown key "pkcs11 upstream plugin_data.root_cert"'
    with pytest.raises(ConfigError, match=re.escape(unknown)):
        _upstream(softhsm_token, clock, root_cert="x")


def test_operator_key_by_label(softhsm_token: SoftHsmToken) -> None:
    """An existing root key is used by its exact label, if it is a signing-only HSM key."""
    made = subprocess.run(
        ["pkcs11-tool", "--module", softhsm_token.module_path, "--token-label",
         softhsm_token.token_label, "--login", "--pin", softhsm_token.pin, "--keypairgen",
         "--key-type", "EC:secp384r1", "--label", "corp-root", "--id", "0b0b", "--usage-sign"],
        capture_output=True, text=True, env=softhsm_token.env(), check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    clock = ManualClock(START)
    # pkcs11-tool leaves decrypt/unwrap on; such a key is refused, naming the attribute
    with pytest.raises(KeyManagerError, match=r"'corp-root' is refused: .*DECRYPT=True"):
        _upstream(softhsm_token, clock, root_key_label="corp-root")
    # a proper one, made in the token beforehand (here through the manager, unscoped label)
    config = parse_pkcs11_config(softhsm_token.plugin_data())
    maker = Pkcs11KeyManager(
        open_token_session(config), trust_domain=TD, server_id="x", label_scope=""
    )
    try:
        public = maker.generate_key("corp-root-2", KeyType.EC_P256)
    finally:
        maker.close()
    upstream = _upstream(softhsm_token, clock, root_key_label="corp-root-2")
    try:
        root = upstream.root_certificate
        assert root.public_key() == public
        assert root.subject.rfc4514_string() == "CN=example.org HSM root,O=SPIFFE"
    finally:
        upstream.close()


async def _run_ca(km: KeyManager, upstream: Pkcs11UpstreamAuthority) -> None:
    clock = ManualClock(START)
    # the upstream's validity checks use its own clock; keep both at START
    store = MemoryCAStore()
    config = CAConfig(trust_domain=TD)
    ca = await ServerCA.open(
        config=config, key_manager=km, store=store, clock=clock, upstream=upstream
    )
    try:
        leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
        data = await store.fetch_bundle(TD)
        assert data is not None
        roots = Bundle.from_json(data).x509_certificates()
        assert upstream.root_certificate in roots
        ca_cert, _ = ca.x509_authority()
        ca_cert.verify_directly_issued_by(upstream.root_certificate)

        async def sign(i: int) -> None:
            sid = TD.spiffe_id(f"/w/{i}")
            chain = await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=leaf)
            assert validate_x509_svid(chain, [upstream.root_certificate], clock.now()) == sid

        await asyncio.gather(*(sign(i) for i in range(10)))
    finally:
        ca.close()


async def test_fast_mode_intermediate_key_in_memory(softhsm_token: SoftHsmToken) -> None:
    upstream = _upstream(softhsm_token, ManualClock(START))
    try:
        await _run_ca(MemoryKeyManager(), upstream)
    finally:
        upstream.close()


async def test_hsm_mode_intermediate_key_in_the_same_token(softhsm_token: SoftHsmToken) -> None:
    upstream = _upstream(softhsm_token, ManualClock(START))
    km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    try:
        await _run_ca(km, upstream)
        held = sorted(k.key_id.rstrip("AB") for k in km.get_public_keys())
        assert held == ["JWT-Signer-", "x509-CA-"]  # the intermediate's key is in the HSM
    finally:
        km.close()
        upstream.close()
