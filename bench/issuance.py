"""SVID issuance throughput by KeyManager mode (issue: hsm).

BatchNewX509SVID (batches of 50, as an attested agent over mTLS, through the real server API)
for the ``memory``, ``disk``, ``pkcs11`` (every SVID signed in the HSM) and ``pkcs11-upstream``
(HSM-held root, intermediate key in memory) modes, beside the bare python-pkcs11 ECDSA P-256 sign
rate and the bare HSM-signed ``CertificateBuilder`` rate measured in the same run. The agent runs
in its own process; each mode is measured with 1 and with 4 batches in flight (``--concurrency``),
as a server with several agents sees them. In pkcs11 mode the CA's worker processes (one per core)
each log in to the token and sign their share of a batch; the bare rates are one process, one
session.

    .venv/bin/python bench/issuance.py [--seconds 2] [--runs 3] [--concurrency 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from pkcs11 import Mechanism, ObjectClass
from pkcs11_raw import MESSAGE, cert_signer, rate
from softhsm_token import SoftHsmToken, init_token

from plastron.hsm.keymanager import create_pkcs11_key_manager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.server.ca.batch_signing import default_workers
from plastron.server.ca.csr import csr_public_key, parse_csr
from plastron.server.config import parse_server_config
from plastron.server.runtime import PlastronServer
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

TD = TrustDomain("example.org")
BATCH = 50


def pkcs11_block(token: SoftHsmToken, kind: str, extra: str = "") -> str:
    return (
        f'{kind} "pkcs11" {{ plugin_data {{ module_path = "{token.module_path}" '
        f'token_label = "{token.token_label}" pin_file = "{token.pin_file}" {extra} }} }}'
    )


def mode_plugins(mode: str, tmp: Path, token: SoftHsmToken) -> str:
    if mode == "memory":
        return 'KeyManager "memory" { plugin_data {} }'
    if mode == "disk":
        return f'KeyManager "disk" {{ plugin_data {{ directory = "{tmp}/keys" }} }}'
    if mode == "pkcs11":
        return pkcs11_block(token, "KeyManager")
    return 'KeyManager "memory" { plugin_data {} }\n' + pkcs11_block(
        token, "UpstreamAuthority", 'root_key_id = "root"'
    )


def csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class AgentCredentials(NamedTuple):
    """What the load-generating agent process needs: all public except its own key."""

    address: tuple[str, int]
    bundle_der: list[bytes]
    chain_der: list[bytes]
    key_pem: bytes
    path: str


async def become_agent(server: PlastronServer, local: Channel) -> AgentCredentials:
    token = await agent_grpc.AgentStub(local).CreateJoinToken(
        agent_pb2.CreateJoinTokenRequest(ttl=600)
    )
    assert server.datastore is not None and server.listeners is not None
    bundle = Bundle.from_json(await server.datastore.fetch_bundle(TD) or b"")
    address = server.listeners.tcp_address
    assert address is not None
    anon = open_channel(
        address,
        ssl=client_ssl_context(trust_bundle=bundle.x509_certificates()),
        expected_server_id=server_id(TD),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_grpc.AgentStub(anon).AttestAgent.open() as stream:
        await stream.send_message(
            agent_pb2.AttestAgentRequest(
                params={
                    "data": {"type": "join_token", "payload": token.value.encode()},
                    "params": {"csr": csr(key)},
                }
            )
        )
        resp = await stream.recv_message()
        await stream.end()
    anon.close()
    assert resp is not None
    return AgentCredentials(
        address=(str(address[0]), int(address[1])),
        bundle_der=[c.public_bytes(serialization.Encoding.DER) for c in bundle.x509_certificates()],
        chain_der=list(resp.result.svid.cert_chain),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        path=str(resp.result.svid.id.path),
    )


def agent_process(conn: Connection, agent: AgentCredentials, request: bytes) -> None:
    """The load: an agent in its own process, as in production, sending batches over mTLS.

    For each (seconds, concurrency) it receives, it keeps that many batches in flight for that
    long and sends back the SVIDs/s it got; None ends it.
    """
    asyncio.run(_agent_load(conn, agent, request))


async def _agent_load(conn: Connection, agent: AgentCredentials, request: bytes) -> None:
    key = serialization.load_pem_private_key(agent.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    channel = open_channel(
        agent.address,
        ssl=client_ssl_context(
            trust_bundle=[x509.load_der_x509_certificate(c) for c in agent.bundle_der],
            client_chain=[x509.load_der_x509_certificate(c) for c in agent.chain_der],
            client_key=key,
        ),
        expected_server_id=server_id(TD),
    )
    stub = svid_grpc.SVIDStub(channel)
    req = svid_pb2.BatchNewX509SVIDRequest.FromString(request)
    resp = await stub.BatchNewX509SVID(req)  # warm up: connect, and every item must succeed
    bad = [r.status for r in resp.results if r.status.code != 0]
    conn.send(f"item failed: {bad[0]}" if bad else "ready")
    loop = asyncio.get_running_loop()
    while (order := await loop.run_in_executor(None, conn.recv)) is not None:
        seconds, concurrency = order
        began = time.perf_counter()

        async def caller(began: float = began, seconds: float = seconds) -> int:
            done = 0
            while time.perf_counter() - began < seconds:
                await stub.BatchNewX509SVID(req)
                done += len(req.params)
            return done

        counts = await asyncio.gather(*(caller() for _ in range(concurrency)))
        conn.send(sum(counts) / (time.perf_counter() - began))
    channel.close()


async def run_mode(
    mode: str,
    token: SoftHsmToken,
    seconds: float,
    runs: int,
    concurrencies: tuple[int, ...] = (1,),
    csr_workers: int | None = None,
) -> dict[int, float]:
    with tempfile.TemporaryDirectory(prefix="plastron-issuance-") as d:
        tmp = Path(d)
        conf = f"""
server {{ trust_domain = "example.org" bind_address = "127.0.0.1" bind_port = 0
  socket_path = "{tmp}/api.sock" data_dir = "{tmp}/data" log_level = "ERROR"
  ratelimit {{ attestation = false signing = false }} }}
plugins {{ {mode_plugins(mode, tmp, token)}
  NodeAttestor "join_token" {{ plugin_data {{}} }} }}
"""
        server = PlastronServer(parse_server_config(conf), ca_worker_processes=csr_workers)
        await server.start()
        local = Channel(path=str(tmp / "api.sock"))
        try:
            agent = await become_agent(server, local)
            entries = [
                types_entry.Entry(
                    spiffe_id={"trust_domain": "example.org", "path": f"/w/{i}"},
                    parent_id={"trust_domain": "example.org", "path": agent.path},
                    selectors=[{"type": "unix", "value": f"uid:{i}"}],
                )
                for i in range(BATCH)
            ]
            created = await entry_grpc.EntryStub(local).BatchCreateEntry(
                entry_pb2.BatchCreateEntryRequest(entries=entries)
            )
            assert server.cache is not None
            await server.cache.refresh()
            # One key and CSR per workload, as agents send them: every CSR's signature is checked.
            req = svid_pb2.BatchNewX509SVIDRequest(
                params=[
                    {"entry_id": r.entry.id, "csr": csr(ec.generate_private_key(ec.SECP256R1()))}
                    for r in created.results
                ]
            )
            return await _drive(agent, req.SerializeToString(), seconds, runs, concurrencies)
        finally:
            local.close()
            await server.stop()


async def _drive(
    agent: AgentCredentials,
    request: bytes,
    seconds: float,
    runs: int,
    concurrencies: tuple[int, ...],
) -> dict[int, float]:
    """Median SVIDs/s of ``runs`` runs per concurrency by an agent process, while we serve."""
    loop = asyncio.get_running_loop()
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=agent_process, args=(theirs, agent, request), daemon=True
    )
    process.start()
    try:
        ready = await loop.run_in_executor(None, _receive, ours, process)
        if ready != "ready":
            raise RuntimeError(f"the agent process could not start: {ready}")
        medians = {}
        for concurrency in concurrencies:
            rates = []
            for _ in range(runs):
                ours.send((seconds, concurrency))
                rates.append(float(await loop.run_in_executor(None, _receive, ours, process)))
            medians[concurrency] = statistics.median(rates)
        ours.send(None)
        return medians
    finally:
        await loop.run_in_executor(None, process.join, 10)
        if process.is_alive():
            process.kill()


def _receive(conn: Connection, process: multiprocessing.process.BaseProcess) -> object:
    """The agent process's next answer; an error rather than a hang if it has died."""
    while not conn.poll(1.0):
        if not process.is_alive():
            raise RuntimeError(f"the agent process exited with code {process.exitcode}")
    return conn.recv()


class BareRates(NamedTuple):
    c_sign: float  # python-pkcs11 C_Sign, ECDSA P-256
    builder: float  # CertificateBuilder.sign with the HSM key (SAN only)
    svid: float  # make_x509_svid with the HSM key: the exact certificate the server issues
    csr_check: float  # load + verify one workload CSR (every BatchNewX509SVID item does this)


def svid_signer(hsm_key: ec.EllipticCurvePrivateKey) -> Callable[[], object]:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca_certificate(
        trust_domain=TD,
        public_key=hsm_key.public_key(),
        issuer=None,
        issuer_key=hsm_key,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    leaf = ec.generate_private_key(ec.SECP256R1()).public_key()
    sid = SpiffeId.parse("spiffe://example.org/w/0")
    end = now + dt.timedelta(hours=1)
    return lambda: make_x509_svid(
        spiffe_id=sid, public_key=leaf, issuer=ca, issuer_key=hsm_key, not_before=now, not_after=end
    )


def csr_checker() -> Callable[[], object]:
    der = csr(ec.generate_private_key(ec.SECP256R1()))
    return lambda: csr_public_key(parse_csr(der))


def bare_rates(token: SoftHsmToken, seconds: float, runs: int) -> BareRates:
    km = create_pkcs11_key_manager(token.plugin_data(), trust_domain=TD, server_id="bare")
    try:
        km.generate_key("x509-CA-A", KeyType.EC_P256)
        hsm_key = km.signer("x509-CA-A")
        label = km.label_for("x509-CA-A")
        digest = hashlib.sha256(MESSAGE).digest()
        with PKCS11_LOCK:
            session = pkcs11.lib(token.module_path).get_token(token_label=token.token_label).open()
            raw: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        c_sign = statistics.median(
            rate(lambda: raw.sign(digest, mechanism=Mechanism.ECDSA), seconds) for _ in range(runs)
        )
        assert isinstance(hsm_key, ec.EllipticCurvePrivateKey)
        medians = [
            statistics.median(rate(fn, seconds) for _ in range(runs))
            for fn in (cert_signer(hsm_key), svid_signer(hsm_key), csr_checker())
        ]
        with PKCS11_LOCK:
            session.close()
        return BareRates(c_sign, *medians)
    finally:
        km.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--concurrency", default="1,4", help="batches in flight, one row per value (e.g. 1,4)"
    )
    parser.add_argument("--modes", default="memory,disk,pkcs11,pkcs11-upstream")
    parser.add_argument(
        "--csr-workers", type=int, default=None, help="CSR check processes (default: the server's)"
    )
    args = parser.parse_args()
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    with tempfile.TemporaryDirectory(prefix="plastron-issuance-hsm-") as hsm_dir:
        base = Path(hsm_dir)
        bare = bare_rates(init_token(base, "bare"), args.seconds, args.runs)
        results: dict[str, dict[int, float]] = {}
        for mode in args.modes.split(","):
            token = init_token(base, f"issuance-{mode}")
            results[mode] = asyncio.run(
                run_mode(mode, token, args.seconds, args.runs, concurrencies, args.csr_workers)
            )
    print_table(results, bare)
    print(
        f"(BatchNewX509SVID batches of {BATCH}; CSR workers "
        f"{default_workers() if args.csr_workers is None else args.csr_workers}, in pkcs11 "
        f"mode {default_workers(signing=True) if args.csr_workers is None else args.csr_workers}"
        " that also sign, each with its own token session; "
        f"medians of {args.runs} x {args.seconds:g}s; "
        "the agent in its own process, the server in this one)"
    )
    return 0


def print_table(results: dict[str, dict[int, float]], bare: BareRates) -> None:
    print(
        f"{'mode':<16} {'in flight':>9} {'SVIDs/s':>9}  {'raw limit (same run)':<42} {'ratio':>6}"
    )
    for mode, by_concurrency in results.items():
        for concurrency, value in by_concurrency.items():
            memory = results.get("memory", {}).get(concurrency)
            label, limit = {
                "disk": ("memory mode", memory),
                "pkcs11": ("bare HSM-signed CertificateBuilder", bare.builder),
                "pkcs11-upstream": ("memory mode", memory),
            }.get(mode, ("-", None))
            ratio = f"{value / limit:6.2f}" if limit else "     -"
            limit_text = f"{label} {limit:,.0f}/s" if limit else label
            print(f"{mode:<16} {concurrency:>9} {value:>9,.0f}  {limit_text:<42} {ratio}")
    print(
        f"bare python-pkcs11 C_Sign ECDSA P-256: {bare.c_sign:,.0f}/s; "
        f"bare HSM-signed CertificateBuilder: {bare.builder:,.0f}/s; "
        f"HSM-signed SVID (make_x509_svid, the server's template): {bare.svid:,.0f}/s; "
        f"CSR load+verify: {bare.csr_check:,.0f}/s"
    )
    # The CPU every pkcs11-mode SVID needs before any RPC, against what the goal (0.6 of the
    # bare builder) leaves per SVID on all of this machine's cores, agent included.
    needed = 1e6 / bare.svid + 1e6 / bare.csr_check
    goal = 0.6 * bare.builder
    cores = os.cpu_count() or 1
    print(
        f"CPU per pkcs11-mode SVID before any RPC: HSM-signed SVID {1e6 / bare.svid:.0f} us + "
        f"CSR check {1e6 / bare.csr_check:.0f} us = {needed:.0f} us; the goal, {goal:,.0f} "
        f"SVIDs/s, allows {cores * 1e6 / goal:.0f} us of CPU per SVID on {cores} cores for that, "
        "the RPC at both ends and the agent"
    )


if __name__ == "__main__":
    sys.exit(main())
