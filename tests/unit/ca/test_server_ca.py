"""ServerCA signing: shapes, TTL defaults and caps, JWT claims, input checks, key types."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import jwt as pyjwt
import pytest
from ca_unit_support import TD, ObservedKeyManager, akid, bundle_of, open_ca, skid
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import ManualClock
from plastron.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    KeyManagerUnavailable,
    Unavailable,
)
from plastron.keymanager import KeyType
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import (
    make_x509_svid,
    spiffe_id_from_certificate,
    validate_x509_svid,
)

WORKLOAD = TD.spiffe_id("/ns/prod/web")
AGENT = TD.spiffe_id("/spire/agent/join_token/abc")


def _leaf_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


async def test_workload_svid_shape_and_default_ttl(
    ca: ServerCA, store: MemoryCAStore, clock: ManualClock
) -> None:
    chain = await ca.sign_workload_x509_svid(
        spiffe_id=WORKLOAD, public_key=_leaf_key(), dns_names=["web.example.org"]
    )
    leaf = chain[0]
    assert len(chain) == 1  # self-signed CA: the root is in the bundle, not the chain
    assert spiffe_id_from_certificate(leaf) == WORKLOAD
    assert leaf.not_valid_before_utc == clock.now() - dt.timedelta(seconds=10)
    assert leaf.not_valid_after_utc == clock.now() + dt.timedelta(hours=1)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org"]
    assert akid(leaf) == skid(ca.x509_authority()[0])
    roots = (await bundle_of(store)).x509_certificates()
    assert validate_x509_svid(chain, roots, clock.now()) == WORKLOAD


async def test_explicit_ttl_and_agent_and_server_svids(ca: ServerCA, clock: ManualClock) -> None:
    chain = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_leaf_key(), ttl=120)
    assert chain[0].not_valid_after_utc == clock.now() + dt.timedelta(seconds=120)
    agent = await ca.sign_agent_x509_svid(spiffe_id=AGENT, public_key=_leaf_key())
    assert spiffe_id_from_certificate(agent[0]) == AGENT
    assert agent[0].not_valid_after_utc == clock.now() + dt.timedelta(hours=1)
    server = await ca.sign_server_x509_svid(public_key=_leaf_key())
    assert str(spiffe_id_from_certificate(server[0])) == "spiffe://example.org/spire/server"


async def test_ttl_beyond_ca_lifetime_is_capped_with_a_warning(
    ca: ServerCA, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ca_cert, _ = ca.x509_authority()
    clock.advance(dt.timedelta(hours=10))
    with caplog.at_level(logging.WARNING, logger="plastron.server.ca.server_ca"):
        chain = await ca.sign_workload_x509_svid(
            spiffe_id=WORKLOAD, public_key=_leaf_key(), ttl=48 * 3600
        )
    assert chain[0].not_valid_after_utc == ca_cert.not_valid_after_utc
    assert any("capped" in r.getMessage() for r in caplog.records)


async def test_jwt_svid_claims_and_exp_cap(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    cfg = CAConfig(trust_domain=TD, jwt_issuer="https://oidc.example.org")
    ca = await open_ca(cfg, km, store, clock)
    token = await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a", "b"])
    keys = (await bundle_of(store)).jwt_keys()
    svid = validate_jwt_svid(token, audience=["a", "b"], authorities=keys, now=clock.now())
    assert svid.spiffe_id == WORKLOAD
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": ca.jwt_key_id(), "typ": "JWT"}
    claims = pyjwt.decode(token, options={"verify_signature": False})
    now = int(clock.now().timestamp())
    assert claims["iss"] == "https://oidc.example.org"
    assert claims["iat"] == now and claims["exp"] == now + 300
    # Requested far beyond the JWT key's life: exp is its not_after.
    key = ca.manager.current_jwt
    assert key is not None
    long = await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"], ttl=7 * 86400)
    exp = pyjwt.decode(long, options={"verify_signature": False})["exp"]
    assert exp == int(key.not_after.timestamp())
    ca.close()


async def test_no_iss_without_jwt_issuer(ca: ServerCA) -> None:
    token = await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"])
    assert "iss" not in pyjwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda ca: ca.sign_workload_x509_svid(
                spiffe_id=SpiffeId(TrustDomain("other.org"), "/w"), public_key=_leaf_key()
            ),
            "not a member",
        ),
        (
            lambda ca: ca.sign_workload_x509_svid(spiffe_id=TD.id, public_key=_leaf_key()),
            "no path",
        ),
        (
            lambda ca: ca.sign_workload_x509_svid(
                spiffe_id=WORKLOAD, public_key=_leaf_key(), ttl=-1
            ),
            "negative",
        ),
        (
            lambda ca: ca.sign_workload_x509_svid(
                spiffe_id=WORKLOAD, public_key=_leaf_key(), ttl=10**12
            ),
            "exceeds",
        ),
        (
            lambda ca: ca.sign_workload_x509_svid(
                spiffe_id=WORKLOAD, public_key=_leaf_key(), dns_names=["x"] * 101
            ),
            "DNS names",
        ),
        (
            lambda ca: ca.sign_workload_x509_svid(
                spiffe_id=WORKLOAD, public_key=_leaf_key(), dns_names=["a b"]
            ),
            "whitespace",
        ),
        (
            lambda ca: ca.sign_agent_x509_svid(spiffe_id=WORKLOAD, public_key=_leaf_key()),
            "/spire/agent/",
        ),
        (lambda ca: ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=[]), "audience"),
        (lambda ca: ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=[""]), "audience"),
        (lambda ca: ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience="aud"), "not a string"),
        (lambda ca: ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"] * 33), "audience"),
    ],
)
async def test_bad_requests_are_rejected(ca: ServerCA, call: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await call(ca)  # type: ignore[operator]


async def test_signing_without_an_active_ca_fails(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    ca = await open_ca(config, km, store, clock)
    clock.advance(dt.timedelta(days=2))  # the rotator has not run: the CA expired
    with pytest.raises(FailedPrecondition, match="expired"):
        await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_leaf_key())
    with pytest.raises(FailedPrecondition, match="expired"):
        await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"])
    await ca.rotator.rotate()
    chain = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_leaf_key())
    assert chain[0].not_valid_after_utc > clock.now()
    ca.close()


async def test_health_check_signs_and_reports_key_manager_failure(
    ca: ServerCA, km: ObservedKeyManager
) -> None:
    await ca.health_check()
    km.fail_signer = True
    with pytest.raises(KeyManagerUnavailable):
        await ca.health_check()


async def test_downstream_ca(ca: ServerCA, store: MemoryCAStore, clock: ManualClock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain = await ca.sign_downstream_x509_ca(csr_public_key=key.public_key(), ttl=3600)
    inter = chain[0]
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert akid(inter) == skid(ca.x509_authority()[0])
    assert inter.not_valid_after_utc == clock.now() + dt.timedelta(hours=1)
    roots = (await bundle_of(store)).x509_certificates()
    # An SVID minted by the downstream CA validates against our bundle through the chain.
    leaf = make_x509_svid(
        spiffe_id=WORKLOAD,
        public_key=_leaf_key(),
        issuer=inter,
        issuer_key=key,
        not_before=clock.now(),
        not_after=clock.now() + dt.timedelta(minutes=5),
    )
    assert validate_x509_svid([leaf, *chain], roots, clock.now()) == WORKLOAD


@pytest.mark.parametrize("key_type", list(KeyType))
async def test_every_key_type_signs_both_kinds(
    key_type: KeyType, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> None:
    cfg = CAConfig(trust_domain=TD, ca_key_type=key_type, jwt_key_type=key_type)
    ca = await open_ca(cfg, km, store, clock)
    ca_key = ca.x509_authority()[0].public_key()
    if key_type in (KeyType.EC_P256, KeyType.EC_P384):
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        assert ca_key.curve.key_size == (256 if key_type is KeyType.EC_P256 else 384)
    else:
        assert isinstance(ca_key, rsa.RSAPublicKey)
        assert ca_key.key_size == (2048 if key_type is KeyType.RSA_2048 else 4096)
    bundle = await bundle_of(store)
    chain = await ca.sign_workload_x509_svid(spiffe_id=WORKLOAD, public_key=_leaf_key())
    assert validate_x509_svid(chain, bundle.x509_certificates(), clock.now()) == WORKLOAD
    token = await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["x"])
    expected_alg = {"ec-p256": "ES256", "ec-p384": "ES384"}.get(key_type.value, "RS256")
    assert pyjwt.get_unverified_header(token)["alg"] == expected_alg
    validate_jwt_svid(token, audience="x", authorities=bundle.jwt_keys(), now=clock.now())
    ca.close()


@pytest.mark.parametrize("blocking", [False, True])
async def test_concurrent_signing_across_a_rotation(
    blocking: bool, store: MemoryCAStore, clock: ManualClock, config: CAConfig
) -> None:
    km = ObservedKeyManager(blocking=blocking, clock=clock)
    ca = await open_ca(config, km, store, clock)
    clock.advance(dt.timedelta(hours=20, minutes=1))  # next tick prepares and activates

    async def sign(i: int) -> list[x509.Certificate]:
        sid = TD.spiffe_id(f"/w/{i}")
        return await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=_leaf_key())

    results = await asyncio.gather(*(sign(i) for i in range(150)), ca.rotator.rotate())
    chains = [r for r in results if r is not None]
    assert len(chains) == 150
    roots = (await bundle_of(store)).x509_certificates()
    assert len({c[0].serial_number for c in chains}) == 150
    for i, chain in enumerate(chains):
        assert validate_x509_svid(chain, roots, clock.now()) == TD.spiffe_id(f"/w/{i}")
    tokens = await asyncio.gather(
        *(ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"]) for _ in range(50))
    )
    keys = (await bundle_of(store)).jwt_keys()
    for token in tokens:
        validate_jwt_svid(token, audience="a", authorities=keys, now=clock.now())
    ca.close()


def test_config_warns_when_default_ttls_exceed_the_guaranteed_ttl() -> None:
    cfg = CAConfig(trust_domain=TD, ca_ttl=dt.timedelta(hours=6))
    assert cfg.guaranteed_svid_ttl == dt.timedelta(hours=1)
    assert cfg.ttl_warnings() == []
    long = CAConfig(
        trust_domain=TD, ca_ttl=dt.timedelta(hours=6), default_x509_svid_ttl=dt.timedelta(hours=2)
    )
    (warning,) = long.ttl_warnings()
    assert "default_x509_svid_ttl" in warning and "1:00:00" in warning


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ca_ttl": dt.timedelta(0)}, "ca_ttl"),
        ({"default_x509_svid_ttl": dt.timedelta(seconds=-1)}, "default_x509_svid_ttl"),
        ({"signing_workers": 0}, "signing_workers"),
        ({"jwt_issuer": ""}, "jwt_issuer"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        CAConfig(trust_domain=TD, **kwargs)  # type: ignore[arg-type]


async def test_closed_ca_refuses_to_sign(ca: ServerCA) -> None:
    ca.close()
    with pytest.raises(Unavailable, match="closed"):
        await ca.sign_jwt_svid(spiffe_id=WORKLOAD, audience=["a"])
