"""The disk UpstreamAuthority: the server CA becomes an intermediate; the bundle holds roots."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from ca_unit_support import START, TD, ObservedKeyManager, akid, bundle_of, skid
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import ManualClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, FailedPrecondition, InvalidArgument
from plastron.plugins import PluginContext, load_plugins
from plastron.server import plugin_loading
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.server.upstream.disk import DiskUpstreamAuthority, DiskUpstreamConfig
from plastron.spiffe.bundle import JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate, validate_x509_svid
from plastron.upstream import UpstreamAuthority, UpstreamUnsupported

WORKLOAD = TD.spiffe_id("/w")
UPSTREAM_TD = TrustDomain("upstream.example")
_ = plugin_loading  # registers the disk UpstreamAuthority


def _ca(
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    days: int = 365,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_ca_certificate(
        trust_domain=UPSTREAM_TD,
        public_key=key.public_key(),
        issuer=None if issuer is None else issuer[0],
        issuer_key=key if issuer is None else issuer[1],
        not_before=START - dt.timedelta(days=1),
        not_after=START + dt.timedelta(days=days),
    )
    return cert, key


def _write(
    tmp: Path,
    certs: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    roots: list[x509.Certificate] | None = None,
) -> DiskUpstreamConfig:
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(b"".join(c.public_bytes(pem) for c in certs))
    (tmp / "ca.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    bundle = None
    if roots is not None:
        bundle = tmp / "bundle.pem"
        bundle.write_bytes(b"".join(c.public_bytes(pem) for c in roots))
    return DiskUpstreamConfig(tmp / "ca.pem", tmp / "ca.key", bundle)


def _self_signed(
    tmp: Path, root: x509.Certificate, key: ec.EllipticCurvePrivateKey, clock: ManualClock
) -> DiskUpstreamAuthority:
    return DiskUpstreamAuthority(_write(tmp, [root], key), trust_domain=TD, clock=clock)


async def _open(upstream: UpstreamAuthority, clock: ManualClock, store: MemoryCAStore) -> ServerCA:
    return await ServerCA.open(
        config=CAConfig(trust_domain=TD),
        key_manager=ObservedKeyManager(clock=clock),
        store=store,
        clock=clock,
        upstream=upstream,
    )


async def test_self_signed_upstream_root_is_the_bundle(
    tmp_path: Path, clock: ManualClock, store: MemoryCAStore
) -> None:
    root, root_key = _ca(None)
    upstream = DiskUpstreamAuthority(
        _write(tmp_path, [root], root_key), trust_domain=TD, clock=clock
    )
    ca = await _open(upstream, clock, store)
    inter, chain = ca.x509_authority()
    assert chain == []
    assert akid(inter) == skid(root)
    assert (await bundle_of(store)).x509_certificates() == [root]
    svid = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_key())
    assert svid[1:] == [inter]  # leaf, then our intermediate; the root stays out
    assert validate_x509_svid(svid, [root], clock.now()) == WORKLOAD
    # Rotation mints a new intermediate; the bundle still holds only the root.
    clock.advance(dt.timedelta(hours=21))
    await ca.rotator.rotate()
    await ca.rotator.rotate()
    new_inter, _ = ca.x509_authority()
    assert new_inter != inter
    assert (await bundle_of(store)).x509_certificates() == [root]
    svid2 = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_key())
    assert svid2[1] == new_inter
    assert validate_x509_svid(svid2, [root], clock.now()) == WORKLOAD
    ca.close()


async def test_intermediate_upstream_with_bundle_file(
    tmp_path: Path, clock: ManualClock, store: MemoryCAStore
) -> None:
    root = _ca(None)
    upstream_inter, upstream_key = _ca(root, days=30)
    cfg = _write(tmp_path, [upstream_inter], upstream_key, roots=[root[0]])
    ca = await _open(DiskUpstreamAuthority(cfg, trust_domain=TD, clock=clock), clock, store)
    ours, chain = ca.x509_authority()
    assert chain == [upstream_inter]
    assert (await bundle_of(store)).x509_certificates() == [root[0]]
    svid = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_key())
    assert svid[1:] == [ours, upstream_inter]
    assert validate_x509_svid(svid, [root[0]], clock.now()) == WORKLOAD
    ca.close()


async def test_restart_in_upstream_mode_keeps_chain(
    tmp_path: Path, clock: ManualClock, store: MemoryCAStore
) -> None:
    root = _ca(None)
    upstream_inter, upstream_key = _ca(root, days=30)
    cfg = _write(tmp_path, [upstream_inter], upstream_key, roots=[root[0]])
    km = ObservedKeyManager(clock=clock)
    config = CAConfig(trust_domain=TD)
    upstream = DiskUpstreamAuthority(cfg, trust_domain=TD, clock=clock)
    first = await ServerCA.open(
        config=config, key_manager=km, store=store, clock=clock, upstream=upstream
    )
    before = first.x509_authority()
    bundle_before = await store.fetch_bundle(TD)
    first.close()
    km2 = ObservedKeyManager(km.inner, clock=clock)
    second = await ServerCA.open(
        config=config, key_manager=km2, store=store, clock=clock, upstream=upstream
    )
    assert second.x509_authority() == before
    assert await store.fetch_bundle(TD) == bundle_before
    assert km2.generated == []
    second.close()


async def test_intermediate_is_capped_by_upstream_expiry(
    tmp_path: Path, clock: ManualClock, store: MemoryCAStore
) -> None:
    root, root_key = _ca(None, days=0)  # expires at START, lives from START - 1 day
    clock.set(START - dt.timedelta(hours=2))
    upstream = DiskUpstreamAuthority(
        _write(tmp_path, [root], root_key), trust_domain=TD, clock=clock
    )
    ca = await _open(upstream, clock, store)
    assert ca.x509_authority()[0].not_valid_after_utc == root.not_valid_after_utc
    ca.close()


async def test_disk_upstream_has_no_jwt_side(tmp_path: Path, clock: ManualClock) -> None:
    root, root_key = _ca(None)
    upstream = DiskUpstreamAuthority(
        _write(tmp_path, [root], root_key), trust_domain=TD, clock=clock
    )
    with pytest.raises(UpstreamUnsupported):
        await upstream.publish_jwt_key(JwtAuthority("kid", _key()))


def _key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def test_key_not_matching_certificate_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    root, _ = _ca(None)
    _, other_key = _ca(None)
    with pytest.raises(ConfigError, match="does not match"):
        DiskUpstreamAuthority(_write(tmp_path, [root], other_key), trust_domain=TD, clock=clock)


def test_non_self_signed_without_bundle_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    inter, key = _ca(_ca(None))
    with pytest.raises(ConfigError, match="bundle_file_path is required"):
        DiskUpstreamAuthority(_write(tmp_path, [inter], key), trust_domain=TD, clock=clock)


def test_chain_not_reaching_bundle_root_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    inter, key = _ca(_ca(None))
    stranger, _ = _ca(None)
    cfg = _write(tmp_path, [inter], key, roots=[stranger])
    with pytest.raises(ConfigError, match="does not lead to a root"):
        DiskUpstreamAuthority(cfg, trust_domain=TD, clock=clock)


def test_non_ca_certificate_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "leaf")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(START - dt.timedelta(days=1))
        .not_valid_after(START + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(ConfigError, match="not a CA"):
        DiskUpstreamAuthority(_write(tmp_path, [cert], key), trust_domain=TD, clock=clock)


def test_missing_and_oversized_files_are_refused(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        DiskUpstreamAuthority(
            DiskUpstreamConfig(tmp_path / "nope.pem", tmp_path / "nope.key"),
            trust_domain=TD,
            clock=clock,
        )
    big = tmp_path / "big.pem"
    big.write_bytes(b"A" * ((1 << 20) + 1))
    with pytest.raises(ConfigError, match="exceeds"):
        DiskUpstreamAuthority(DiskUpstreamConfig(big, big), trust_domain=TD, clock=clock)


async def test_forged_csr_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    root, root_key = _ca(None)
    upstream = DiskUpstreamAuthority(
        _write(tmp_path, [root], root_key), trust_domain=TD, clock=clock
    )
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit in the signature
    tampered = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(InvalidArgument, match="signature"):
        await upstream.mint_x509_ca(tampered, dt.timedelta(hours=1))


async def test_expired_upstream_refuses_to_mint(tmp_path: Path, clock: ManualClock) -> None:
    root, root_key = _ca(None, days=1)
    upstream = DiskUpstreamAuthority(
        _write(tmp_path, [root], root_key), trust_domain=TD, clock=clock
    )
    clock.advance(dt.timedelta(days=2))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(FailedPrecondition, match="expired"):
        await upstream.mint_x509_ca(csr, dt.timedelta(hours=1))


def test_relative_file_paths_resolve_from_the_config_directory(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, root_key = _ca(None)
    _write(tmp_path, [root], root_key)
    monkeypatch.chdir("/")
    plugin = PluginConfig(
        "UpstreamAuthority", "disk", {"cert_file_path": "ca.pem", "key_file_path": "ca.key"}
    )
    context = PluginContext(trust_domain=TD, clock=clock, base_dir=tmp_path)
    upstreams = load_plugins(["plastron.server.upstream.disk"]).upstream_authorities
    assert isinstance(upstreams.create(plugin, context), DiskUpstreamAuthority)
