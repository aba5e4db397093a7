"""SVID issuance throughput by KeyManager mode (issue: hsm).

BatchNewX509SVID (batches of 50, as an attested agent over mTLS, through the real server API)
for the ``memory``, ``disk``, ``pkcs11`` (every SVID signed in the HSM) and ``pkcs11-upstream``
(HSM-held root, intermediate key in memory) modes, beside the bare python-pkcs11 ECDSA P-256 sign
rate and the bare HSM-signed ``CertificateBuilder`` rate measured in the same run. Several batches
can be in flight at once (``--concurrency``, default 1).

    .venv/bin/python bench/issuance.py [--seconds 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from pkcs11 import Mechanism, ObjectClass
from pkcs11_raw import MESSAGE, cert_signer, rate
from softhsm_token import SoftHsmToken, init_token

from plastron.config import parse_server_config
from plastron.hsm.keymanager import create_pkcs11_key_manager
from plastron.hsm.session import PKCS11_LOCK
from plastron.keymanager import KeyType
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
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


def csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def become_agent(server: PlastronServer, local: Channel) -> tuple[Channel, str]:
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
    chain = [x509.load_der_x509_certificate(c) for c in resp.result.svid.cert_chain]
    return open_channel(
        address,
        ssl=client_ssl_context(
            trust_bundle=bundle.x509_certificates(), client_chain=chain, client_key=key
        ),
        expected_server_id=server_id(TD),
    ), str(resp.result.svid.id.path)


async def run_mode(
    mode: str, token: SoftHsmToken, seconds: float, runs: int, concurrency: int = 1
) -> float:
    with tempfile.TemporaryDirectory(prefix="plastron-issuance-") as d:
        tmp = Path(d)
        conf = f"""
server {{ trust_domain = "example.org" bind_address = "127.0.0.1" bind_port = 0
  socket_path = "{tmp}/api.sock" data_dir = "{tmp}/data" log_level = "ERROR"
  ratelimit {{ attestation = false signing = false }} }}
plugins {{ {mode_plugins(mode, tmp, token)}
  NodeAttestor "join_token" {{ plugin_data {{}} }} }}
"""
        server = PlastronServer(parse_server_config(conf))
        await server.start()
        local = Channel(path=str(tmp / "api.sock"))
        try:
            agent_channel, agent_path = await become_agent(server, local)
            entries = [
                types_entry.Entry(
                    spiffe_id={"trust_domain": "example.org", "path": f"/w/{i}"},
                    parent_id={"trust_domain": "example.org", "path": agent_path},
                    selectors=[{"type": "unix", "value": f"uid:{i}"}],
                )
                for i in range(BATCH)
            ]
            created = await entry_grpc.EntryStub(local).BatchCreateEntry(
                entry_pb2.BatchCreateEntryRequest(entries=entries)
            )
            assert server.cache is not None
            await server.cache.refresh()
            wkey = ec.generate_private_key(ec.SECP256R1())
            one_csr = csr(wkey)
            req = svid_pb2.BatchNewX509SVIDRequest(
                params=[{"entry_id": r.entry.id, "csr": one_csr} for r in created.results]
            )
            stub = svid_grpc.SVIDStub(agent_channel)
            resp = await stub.BatchNewX509SVID(req)  # warm up
            assert all(r.status.code == 0 for r in resp.results), resp.results[0].status
            rates = []
            for _ in range(runs):
                began = time.perf_counter()

                async def worker(began: float = began) -> int:
                    done = 0
                    while time.perf_counter() - began < seconds:
                        await stub.BatchNewX509SVID(req)
                        done += BATCH
                    return done

                counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
                rates.append(sum(counts) / (time.perf_counter() - began))
            agent_channel.close()
            return statistics.median(rates)
        finally:
            local.close()
            await server.stop()


def bare_rates(token: SoftHsmToken, seconds: float, runs: int) -> tuple[float, float]:
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
        builder = cert_signer(hsm_key)
        issue = statistics.median(rate(builder, seconds) for _ in range(runs))
        with PKCS11_LOCK:
            session.close()
        return c_sign, issue
    finally:
        km.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="batches in flight")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plastron-issuance-hsm-") as hsm_dir:
        base = Path(hsm_dir)
        c_sign, hsm_issue = bare_rates(init_token(base, "bare"), args.seconds, args.runs)
        results = {}
        for mode in ("memory", "disk", "pkcs11", "pkcs11-upstream"):
            token = init_token(base, f"issuance-{mode}")
            results[mode] = asyncio.run(
                run_mode(mode, token, args.seconds, args.runs, args.concurrency)
            )
    print(f"{'mode':<18} {'SVIDs/s':>9}  {'raw limit (same run)':<38} {'ratio':>6}")
    limits = {
        "memory": ("-", None),
        "disk": ("memory mode", results["memory"]),
        "pkcs11": ("bare HSM-signed CertificateBuilder", hsm_issue),
        "pkcs11-upstream": ("memory mode", results["memory"]),
    }
    for mode, value in results.items():
        label, limit = limits[mode]
        ratio = f"{value / limit:6.2f}" if limit else "     -"
        limit_text = f"{label} {limit:,.0f}/s" if limit else label
        print(f"{mode:<18} {value:>9,.0f}  {limit_text:<38} {ratio}")
    print(
        f"bare python-pkcs11 C_Sign ECDSA P-256: {c_sign:,.0f}/s; "
        f"bare HSM-signed CertificateBuilder: {hsm_issue:,.0f}/s"
    )
    print(
        f"(BatchNewX509SVID batches of {BATCH}, {args.concurrency} in flight, "
        f"medians of {args.runs} x {args.seconds:g}s, "
        "client and server in one process on this machine)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
