"""A real server whose CA keys live in a SoftHSM2 token: keys never extractable and never on
disk, restart reuses them, an HSM outage answers UNAVAILABLE and turns health NOT_SERVING, then
recovers without a restart; the pkcs11 UpstreamAuthority roots the bundle in the HSM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from softhsm_token import SoftHsmToken

from plastron.errors import PlastronError
from plastron.hsm.session import PKCS11_LOCK
from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.server.ca.batch_signing import MIN_POOLED
from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.server.server_harness import (
    AgentIdentity,
    Harness,
    free_port,
    make_csr,
    running_server,
    server_conf,
)

pytestmark = pytest.mark.softhsm


def pkcs11_block(token: SoftHsmToken, kind: str = "KeyManager", extra: str = "") -> str:
    return (
        f'{kind} "pkcs11" {{ plugin_data {{ module_path = "{token.module_path}" '
        f'token_label = "{token.token_label}" pin_file = "{token.pin_file}" {extra} }} }}'
    )


async def mint(h: Harness) -> list[x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await h.svid_stub(h.local()).MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, "spiffe://example.org/hsm"))
    )
    return [x509.load_der_x509_certificate(c) for c in resp.svid.cert_chain]


async def agent_with_entry(h: Harness) -> tuple[AgentIdentity, str]:
    agent = await h.attest(await h.join_token())
    created = await h.entry_stub(h.local()).BatchCreateEntry(
        entry_pb2.BatchCreateEntryRequest(
            entries=[
                types_entry.Entry(
                    spiffe_id={"trust_domain": "example.org", "path": "/hsm-batch"},
                    parent_id={"trust_domain": "example.org", "path": agent.spiffe_id.path},
                    selectors=[{"type": "unix", "value": "uid:1"}],
                )
            ]
        )
    )
    return agent, str(created.results[0].entry.id)


async def batch(h: Harness, agent: AgentIdentity, entry_id: str) -> list[int]:
    """Status codes of a BatchNewX509SVID of two items for one authorized entry."""
    key = ec.generate_private_key(ec.SECP256R1())
    req = svid_pb2.BatchNewX509SVIDRequest(
        params=[{"entry_id": entry_id, "csr": make_csr(key)} for _ in range(2)]
    )
    resp = await h.svid_stub(await h.tls(agent)).BatchNewX509SVID(req)
    return [int(r.status.code) for r in resp.results]


async def batch_unavailable(h: Harness, agent: AgentIdentity, entry_id: str) -> bool:
    """True when the whole call, or every item of it, answers UNAVAILABLE."""
    try:
        codes = await batch(h, agent, entry_id)
    except GRPCError as exc:
        return exc.status == Status.UNAVAILABLE and "unreachable" in (exc.message or "")
    return codes == [Status.UNAVAILABLE.value] * 2


async def health(h: Harness, service: str = "") -> int:
    stub = health_grpc.HealthStub(h.local())
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(resp.status)


def list_private_keys(token: SoftHsmToken) -> str:
    return subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            token.module_path,
            "--token-label",
            token.token_label,
            "--login",
            "--pin",
            token.pin,
            "--list-objects",
            "--type",
            "privkey",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=token.env(),
    ).stdout


def no_private_key_material(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix not in (".sqlite3-wal", ".sqlite3-shm"):
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data, path


async def test_ca_keys_in_hsm_restart_outage_and_recovery(
    tmp_path: Path, softhsm_token: SoftHsmToken, caplog: pytest.LogCaptureFixture
) -> None:
    km = pkcs11_block(softhsm_token)
    async with running_server(tmp_path, key_manager=km) as h:
        chain = await mint(h)
        bundle = await h.bundle()
        assert validate_x509_svid(chain, bundle.x509_certificates(), h.server.clock.now())
        first_roots = bundle.x509_certificates()
        objects = list_private_keys(softhsm_token)
        assert "x509-CA-" in objects and "JWT-Signer-" in objects
        for block in objects.split("Private Key Object")[1:]:
            assert "never extractable" in block and "sensitive" in block, block

        assert await health(h) == health_pb2.HealthCheckResponse.SERVING
        agent, entry_id = await agent_with_entry(h)
        assert await batch(h, agent, entry_id) == [0, 0]
        with softhsm_token.removed():
            with pytest.raises(GRPCError) as err:
                await mint(h)
            assert err.value.status == Status.UNAVAILABLE, err.value
            # names the token and what failed, not an opaque INTERNAL
            assert "unreachable" in (err.value.message or ""), err.value.message
            assert softhsm_token.token_label in (err.value.message or "")
            assert await batch_unavailable(h, agent, entry_id)
            h.server.health.invalidate()  # results are cached for 1 s; do not wait for it
            assert await health(h, "ca") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await health(h) == health_pb2.HealthCheckResponse.NOT_SERVING
        # back: same server process, signing and health recover
        h.server.health.invalidate()
        assert await health(h) == health_pb2.HealthCheckResponse.SERVING
        assert validate_x509_svid(await mint(h), first_roots, h.server.clock.now())
        assert await batch(h, agent, entry_id) == [0, 0]

        # the module finalised from outside: the next signature re-initialises and logs in again
        with PKCS11_LOCK:
            pkcs11.lib(softhsm_token.module_path).finalize()
        assert validate_x509_svid(await mint(h), first_roots, h.server.clock.now())
        # finalised while the token is gone: unavailable, then back without a restart
        with softhsm_token.removed():
            with PKCS11_LOCK:
                pkcs11.lib(softhsm_token.module_path).finalize()
            with pytest.raises(GRPCError) as err:
                await mint(h)
            assert err.value.status == Status.UNAVAILABLE, err.value
            h.server.health.invalidate()
            assert await health(h, "ca") == health_pb2.HealthCheckResponse.NOT_SERVING
        h.server.health.invalidate()
        assert await health(h, "ca") == health_pb2.HealthCheckResponse.SERVING
        assert await batch(h, agent, entry_id) == [0, 0]
    no_private_key_material(tmp_path)
    assert "PRIVATE KEY" not in caplog.text

    # restart on the same token and datastore: same CA, same bundle, no new root
    async with running_server(tmp_path, key_manager=km) as h:
        again = await h.bundle()
        assert again.x509_certificates() == first_roots
        assert validate_x509_svid(await mint(h), first_roots, h.server.clock.now())


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        ("pin", "PIN"),
        ("token", "token"),
        ("module", "module"),
    ],
)
async def test_bad_hsm_settings_fail_start_with_one_clear_error(
    tmp_path: Path, softhsm_token: SoftHsmToken, mutate: str, expect: str
) -> None:
    if mutate == "pin":
        bad_pin = tmp_path / "bad.pin"
        bad_pin.write_text("0000\n")
        bad_pin.chmod(0o600)
        km = pkcs11_block(softhsm_token).replace(str(softhsm_token.pin_file), str(bad_pin))
    elif mutate == "token":
        km = pkcs11_block(softhsm_token).replace(softhsm_token.token_label, "no-such-token")
    else:
        km = pkcs11_block(softhsm_token).replace(softhsm_token.module_path, "/nonexistent/lib.so")
    with pytest.raises(PlastronError) as err:
        async with running_server(tmp_path, key_manager=km):
            pass
    assert expect.lower() in str(err.value).lower()
    assert softhsm_token.pin not in str(err.value)


def test_bad_pin_real_process_exits_1_with_one_line(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    bad_pin = tmp_path / "bad.pin"
    bad_pin.write_text("0000\n")
    bad_pin.chmod(0o600)
    km = pkcs11_block(softhsm_token).replace(str(softhsm_token.pin_file), str(bad_pin))
    conf = tmp_path / "server.conf"
    conf.write_text(server_conf(tmp_path, free_port(), key_manager=km))
    proc = subprocess.run(
        [sys.executable, "-m", "plastron.server.cli.main", "run", "-config", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_token.env(),
        check=False,
    )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("time=")]
    assert len(lines) == 1 and lines[0].startswith("Error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "0000" not in proc.stderr


@pytest.mark.parametrize("intermediate", ["memory", "pkcs11"])
async def test_pkcs11_upstream_roots_the_bundle_in_the_hsm(
    tmp_path: Path, softhsm_token: SoftHsmToken, intermediate: str
) -> None:
    km = 'KeyManager "memory" { plugin_data {} }'
    if intermediate == "pkcs11":
        km = pkcs11_block(softhsm_token)
    upstream = pkcs11_block(softhsm_token, "UpstreamAuthority", 'root_key_id = "root"')
    async with running_server(tmp_path, key_manager=km, extra_plugins=upstream) as h:
        roots = (await h.bundle()).x509_certificates()
        assert len(roots) == 1
        root = roots[0]
        assert root.subject == root.issuer  # the HSM's self-signed root, not the server's CA
        chain = await mint(h)
        assert len(chain) == 2  # leaf + the server's intermediate; the root is in the bundle
        assert chain[1].issuer == root.subject
        assert validate_x509_svid(chain, roots, h.server.clock.now())
    assert "root" in list_private_keys(softhsm_token)


async def test_large_batches_are_signed_by_workers_with_their_own_sessions(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    """A batch big enough for the CSR workers is signed there, through each worker's own token
    session: the leaves chain to the HSM-held CA, a bad CSR fails alone, expires_at is the
    leaf's notAfter, and an outage answers UNAVAILABLE per item, then recovers."""
    async with running_server(tmp_path, key_manager=pkcs11_block(softhsm_token)) as h:
        assert h.server.ca is not None
        batches = h.server.ca.batches
        assert batches.key_opener is not None, "the pkcs11 KeyManager offers workers its token"
        agent, entry_id = await agent_with_entry(h)
        svid = h.svid_stub(await h.tls(agent))

        async def big_batch() -> tuple[list[ec.EllipticCurvePrivateKey], list[Any]]:
            keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(MIN_POOLED + 4)]
            params = [{"entry_id": entry_id, "csr": make_csr(k)} for k in keys]
            params[5]["csr"] = b"junk"
            resp = await svid.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=params))
            return keys, list(resp.results)

        keys, results = await big_batch()
        if batches.pool.size:  # none on a single-core machine
            workers = batches.pool.workers()
            assert workers and all(w.alive for w in workers)
        roots = (await h.bundle()).x509_certificates()
        for i, result in enumerate(results):
            if i == 5:
                assert result.status.code == Status.INVALID_ARGUMENT.value
                assert "params[5].csr: malformed CSR" in result.status.message
                continue
            assert result.status.code == 0, result.status
            chain = [x509.load_der_x509_certificate(c) for c in result.svid.cert_chain]
            assert str(validate_x509_svid(chain, roots, h.server.clock.now())) == (
                "spiffe://example.org/hsm-batch"
            )
            assert chain[0].public_key() == keys[i].public_key()
            assert result.svid.expires_at == int(chain[0].not_valid_after_utc.timestamp())
        with softhsm_token.removed():
            _, results = await big_batch()
            codes = {r.status.code for i, r in enumerate(results) if i != 5}
            assert codes == {Status.UNAVAILABLE.value}
            assert all("unreachable" in r.status.message for i, r in enumerate(results) if i != 5)
        # SoftHSM2 rewrites a token's file at every login; a process that lists tokens while
        # another logs in again can miss it for a moment (NoSuchToken), which happens here as
        # the server and each worker log in again. An agent retries; so does this test.
        for _attempt in range(3):
            _, results = await big_batch()
            failed = [r.status.message for i, r in enumerate(results) if i != 5 and r.status.code]
            if not failed:
                break
            assert all("unreachable" in message for message in failed), failed
        assert not failed, failed
