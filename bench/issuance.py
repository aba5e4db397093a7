"""SVID issuance throughput by KeyManager mode (issue: hsm).

BatchNewX509SVID (batches of 50, as an attested agent over mTLS, through the real server API)
for the ``memory``, ``disk``, ``pkcs11`` (every SVID signed in the HSM) and ``pkcs11-upstream``
(HSM-held root, intermediate key in memory) modes, beside the bare python-pkcs11 ECDSA P-256 sign
rate and the bare HSM-signed ``CertificateBuilder`` rate measured in the same run. The agent runs
in its own process; each mode is measured with 1 and with 4 batches in flight (``--concurrency``),
as a server with several agents sees them. In pkcs11 mode the CA's worker processes (one per core)
each log in to the token and sign their share of a batch; the bare rates are one process, one
session. Memory mode is set beside the in-process ``CertificateBuilder`` rate.

Beside each rate: the CPU per SVID of the server process, of the CA's worker processes and of
the agent (psutil, over all runs), and what that CPU allows on this machine's cores with
nothing else running; on a machine shared with other work the rates follow the load, the CPU
per SVID much less (bench/issuance_limits.py measures the raw limits the same way).

    .venv/bin/python bench/issuance.py [--seconds 2] [--runs 3] [--concurrency 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from issuance_limits import BareRates, bare_rates, csr
from softhsm_token import SoftHsmToken, init_token

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.server.ca.batch_signing import default_workers
from plastron.server.config import parse_server_config
from plastron.server.runtime import PlastronServer
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain, server_id
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


class Run(NamedTuple):
    """One timed run of the agent process: SVIDs received, seconds, and its own CPU seconds."""

    svids: int
    seconds: float
    cpu: float


class ModeResult(NamedTuple):
    """One mode at one concurrency: the median rate, and the CPU each process spent per SVID
    over all its runs (load on the machine slows the rate; it barely moves these)."""

    rate: float
    server_us: float  # the server process: event loop, its threads (the bench's are idle)
    workers_us: float  # the CA's worker processes together
    agent_us: float

    @property
    def total_us(self) -> float:
        return self.server_us + self.workers_us + self.agent_us


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
        began, cpu = time.perf_counter(), time.process_time()

        async def caller(began: float = began, seconds: float = seconds) -> int:
            done = 0
            while time.perf_counter() - began < seconds:
                await stub.BatchNewX509SVID(req)
                done += len(req.params)
            return done

        counts = await asyncio.gather(*(caller() for _ in range(concurrency)))
        conn.send(Run(sum(counts), time.perf_counter() - began, time.process_time() - cpu))
    channel.close()


async def run_mode(
    mode: str,
    token: SoftHsmToken,
    seconds: float,
    runs: int,
    concurrencies: tuple[int, ...] = (1,),
    csr_workers: int | None = None,
) -> dict[int, ModeResult]:
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
            return await _drive(
                server, agent, req.SerializeToString(), seconds, runs, concurrencies
            )
        finally:
            local.close()
            await server.stop()


async def _drive(
    server: PlastronServer,
    agent: AgentCredentials,
    request: bytes,
    seconds: float,
    runs: int,
    concurrencies: tuple[int, ...],
) -> dict[int, ModeResult]:
    """Per concurrency, the median SVIDs/s of ``runs`` runs by an agent process, and the CPU
    per SVID of each process, while we serve."""
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
        results = {}
        for concurrency in concurrencies:
            rates, svids, agent_cpu = [], 0, 0.0
            before = _server_cpu(server)
            for _ in range(runs):
                ours.send((seconds, concurrency))
                run = await loop.run_in_executor(None, _receive, ours, process)
                assert isinstance(run, Run)
                rates.append(run.svids / run.seconds)
                svids += run.svids
                agent_cpu += run.cpu
            after = _server_cpu(server)
            results[concurrency] = ModeResult(
                statistics.median(rates),
                server_us=1e6 * (after[0] - before[0]) / svids,
                workers_us=1e6 * (after[1] - before[1]) / svids,
                agent_us=1e6 * agent_cpu / svids,
            )
        ours.send(None)
        return results
    finally:
        await loop.run_in_executor(None, process.join, 10)
        if process.is_alive():
            process.kill()


def _server_cpu(server: PlastronServer) -> tuple[float, float]:
    """CPU seconds so far of the server process and of its CA's worker processes together
    (the workers are started by the warm-up batch, so the same ones before and after a run)."""
    assert server.ca is not None
    workers = 0.0
    for state in server.ca.batches.pool.workers():
        if state.alive and state.pid is not None:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(state.pid).cpu_times()
                workers += times.user + times.system
    own = psutil.Process().cpu_times()
    return own.user + own.system, workers


def _receive(conn: Connection, process: multiprocessing.process.BaseProcess) -> object:
    """The agent process's next answer; an error rather than a hang if it has died."""
    while not conn.poll(1.0):
        if not process.is_alive():
            raise RuntimeError(f"the agent process exited with code {process.exitcode}")
    return conn.recv()


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
        results: dict[str, dict[int, ModeResult]] = {}
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


def print_table(results: dict[str, dict[int, ModeResult]], bare: BareRates) -> None:
    print(
        f"{'mode':<16} {'in flight':>9} {'SVIDs/s':>9}  {'raw limit (same run)':<44} {'ratio':>6}"
        "   CPU us/SVID: server + workers + agent = total"
    )
    for mode, by_concurrency in results.items():
        for concurrency, result in by_concurrency.items():
            memory = results.get("memory", {}).get(concurrency)
            label, limit = {
                "memory": ("in-process CertificateBuilder", bare.memory_builder.rate),
                "disk": ("memory mode", memory.rate if memory else None),
                "pkcs11": ("bare HSM-signed CertificateBuilder", bare.builder.rate),
                "pkcs11-upstream": ("memory mode", memory.rate if memory else None),
            }.get(mode, ("-", None))
            ratio = f"{result.rate / limit:6.2f}" if limit else "     -"
            limit_text = f"{label} {limit:,.0f}/s" if limit else label
            print(
                f"{mode:<16} {concurrency:>9} {result.rate:>9,.0f}  {limit_text:<44} {ratio}"
                f"   {result.server_us:4.0f} + {result.workers_us:4.0f} + {result.agent_us:3.0f}"
                f" = {result.total_us:4.0f}"
            )
    print(
        "raw limits, rate (CPU per call): "
        f"bare python-pkcs11 C_Sign ECDSA P-256 {bare.c_sign.rate:,.0f}/s "
        f"({bare.c_sign.cpu_us:.0f} us); bare HSM-signed CertificateBuilder "
        f"{bare.builder.rate:,.0f}/s ({bare.builder.cpu_us:.0f} us); HSM-signed SVID "
        f"(make_x509_svid, the server's template) {bare.svid.rate:,.0f}/s "
        f"({bare.svid.cpu_us:.0f} us); CSR load+verify {bare.csr_check.rate:,.0f}/s "
        f"({bare.csr_check.cpu_us:.0f} us); in-process CertificateBuilder "
        f"{bare.memory_builder.rate:,.0f}/s ({bare.memory_builder.cpu_us:.0f} us)"
    )
    print_ceilings(results, bare)


def print_ceilings(results: dict[str, dict[int, ModeResult]], bare: BareRates) -> None:
    """What the CPU figures allow with every core to the server and its agent: each mode's
    SVIDs/s if the cores did nothing else, as a ratio to its raw limit's CPU rate."""
    cores = os.cpu_count() or 1
    limits = {"memory": bare.memory_builder, "pkcs11": bare.builder}
    for mode, by_concurrency in results.items():
        limit = limits.get(mode)
        if limit is None:
            continue
        ceilings = ", ".join(
            f"{c} in flight {cores * 1e6 / r.total_us:,.0f}/s"
            f" ({cores * limit.cpu_us / r.total_us:.2f})"
            for c, r in by_concurrency.items()
        )
        print(
            f"{mode}: on {cores} cores with nothing else running, its CPU per SVID allows "
            f"{ceilings} against the raw limit's {1e6 / limit.cpu_us:,.0f}/s on one core"
        )
    # The CPU every pkcs11-mode SVID needs before any RPC (the HSM signature and the CSR check).
    needed = bare.svid.cpu_us + bare.csr_check.cpu_us
    print(
        f"CPU per pkcs11-mode SVID before any RPC: HSM-signed SVID {bare.svid.cpu_us:.0f} us + "
        f"CSR check {bare.csr_check.cpu_us:.0f} us = {needed:.0f} us; 0.6 of the bare builder "
        f"leaves {cores * bare.builder.cpu_us / 0.6:.0f} us of CPU per SVID on {cores} cores "
        "for that, the RPC at both ends and the agent"
    )


if __name__ == "__main__":
    sys.exit(main())
