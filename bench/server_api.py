"""Server API figures (issue: core-server): entry BatchCreate rate, GetAuthorizedEntries
p50/p99 for an agent with 100 authorized entries among 10,000, MintX509SVID rate — on SQLite
and PostgreSQL, each beside a raw limit measured in the same run (bare datastore insert rate,
bare in-process X.509 signing rate).

    .venv/bin/python bench/server_api.py [--entries 10000] [--backends sqlite3,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.records import AttestedNode
from plastron.server.config import parse_server_config
from plastron.server.runtime import PlastronServer
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.spiffe.x509svid import make_x509_svid
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from plastron.wire.entries import entry_from_proto

TD = TrustDomain("example.org")


def conf(tmp: Path, backend: str, dbname: str) -> str:
    conn = (
        f"{tmp}/ds.sqlite3"
        if backend == "sqlite3"
        else f"dbname={dbname} user=postgres host=127.0.0.1"
    )
    return f"""
server {{ trust_domain = "example.org" bind_address = "127.0.0.1" bind_port = 0
  socket_path = "{tmp}/api.sock" data_dir = "{tmp}/data" log_level = "ERROR"
  ratelimit {{ attestation = false signing = false }} }}
plugins {{ DataStore "sql" {{ plugin_data {{
    database_type = "{backend}" connection_string = "{conn}" }} }}
  KeyManager "memory" {{ plugin_data {{}} }} NodeAttestor "join_token" {{ plugin_data {{}} }} }}
"""


def csr(key: ec.EllipticCurvePrivateKey, uri: str) -> bytes:
    b = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    )
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def entry(i: int, parent: str) -> types_entry.Entry:
    e = types_entry.Entry(
        spiffe_id={"trust_domain": "example.org", "path": f"/w/{i}"},
        parent_id={"trust_domain": "example.org", "path": parent},
    )
    e.selectors.add(type="unix", value=f"uid:{i}")
    return e


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def run_backend(backend: str, n_entries: int) -> dict[str, float]:
    dbname = f"plastron_bench_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        with psycopg.connect("dbname=postgres user=postgres host=127.0.0.1", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {dbname}")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = PlastronServer(parse_server_config(conf(tmp, backend, dbname)))
        await server.start()
        try:
            local = Channel(path=str(tmp / "api.sock"))
            entries = entry_grpc.EntryStub(local)
            # BatchCreateEntry, 50 per batch, n_entries in all (100 of them for one agent)
            agent_path = "/spire/agent/join_token/bench"
            t0 = time.perf_counter()
            for start in range(0, n_entries, 50):
                batch = [
                    entry(i, agent_path if i < 100 else f"/spire/agent/x/{i % 97}")
                    for i in range(start, min(start + 50, n_entries))
                ]
                await entries.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=batch))
            out["batch_create_entries_per_s"] = n_entries / (time.perf_counter() - t0)
            # raw: the datastore's own create_entries without gRPC
            raw = [entry_from_proto(entry(n_entries + i, "/raw"), TD) for i in range(1000)]
            assert server.datastore is not None
            t0 = time.perf_counter()
            for start in range(0, len(raw), 50):
                await server.datastore.create_entries(raw[start : start + 50])
            out["raw_datastore_creates_per_s"] = len(raw) / (time.perf_counter() - t0)
            # an attested agent via the datastore + its SVID (GetAuthorizedEntries as that agent)
            assert server.cache is not None and server.ca is not None
            await server.cache.rebuild()
            agent_id = SpiffeId.parse(f"spiffe://example.org{agent_path}")
            akey = ec.generate_private_key(ec.SECP256R1())
            chain = await server.ca.sign_agent_x509_svid(
                spiffe_id=agent_id, public_key=akey.public_key()
            )
            await server.datastore.upsert_attested_node_with_selectors(
                AttestedNode(agent_id, "join_token", str(chain[0].serial_number), 0)
            )
            bundle = Bundle.from_json(await server.datastore.fetch_bundle(TD) or b"")
            ctx = client_ssl_context(
                trust_bundle=bundle.x509_certificates(), client_chain=chain, client_key=akey
            )
            assert server.listeners is not None and server.listeners.tcp_address is not None
            tls = open_channel(
                server.listeners.tcp_address, ssl=ctx, expected_server_id=server_id(TD)
            )
            agent_entries = entry_grpc.EntryStub(tls)
            lat = []
            for _ in range(200):
                t0 = time.perf_counter()
                resp = await agent_entries.GetAuthorizedEntries(
                    entry_pb2.GetAuthorizedEntriesRequest()
                )
                lat.append((time.perf_counter() - t0) * 1000)
                assert len(resp.entries) == 100
            out["authorized_p50_ms"] = statistics.median(lat)
            out["authorized_p99_ms"] = pct(lat, 0.99)
            # MintX509SVID rate vs bare in-process signing
            svid = svid_grpc.SVIDStub(local)
            wkey = ec.generate_private_key(ec.SECP256R1())
            req = svid_pb2.MintX509SVIDRequest(csr=csr(wkey, "spiffe://example.org/m"))
            n = 300
            t0 = time.perf_counter()
            for _ in range(n):
                await svid.MintX509SVID(req)
            out["mint_x509_per_s"] = n / (time.perf_counter() - t0)
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = chain[-1]
            t0 = time.perf_counter()
            now = server.clock.now()
            for _ in range(n):
                make_x509_svid(
                    spiffe_id=SpiffeId.parse("spiffe://example.org/m"),
                    public_key=wkey.public_key(),
                    issuer=ca_cert,
                    issuer_key=ca_key,
                    not_before=now,
                    not_after=now + (ca_cert.not_valid_after_utc - now) / 2,
                )
            out["raw_sign_per_s"] = n / (time.perf_counter() - t0)
            local.close()
            tls.close()
        finally:
            await server.stop()
    if backend == "postgres":
        with psycopg.connect("dbname=postgres user=postgres host=127.0.0.1", autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite3,postgres")
    args = ap.parse_args()
    rows = []
    for backend in args.backends.split(","):
        r = asyncio.run(run_backend(backend, args.entries))
        rows.append((backend, r))
    print(f"{'backend':10} {'figure':34} {'value':>10} {'raw limit':>10} {'ratio':>6}")
    for backend, r in rows:
        create, raw_create = r["batch_create_entries_per_s"], r["raw_datastore_creates_per_s"]
        mint, raw_sign = r["mint_x509_per_s"], r["raw_sign_per_s"]
        label = f"GetAuthorizedEntries p50 ms (100/{args.entries})"
        print(
            f"{backend:10} {'BatchCreateEntry entries/s':34} {create:10.0f} {raw_create:10.0f}",
            end="",
        )
        print(f" {create / raw_create:6.2f}")
        print(f"{backend:10} {label:34} {r['authorized_p50_ms']:10.2f}")
        print(f"{backend:10} {'GetAuthorizedEntries p99 ms':34} {r['authorized_p99_ms']:10.2f}")
        ratio = mint / raw_sign
        print(f"{backend:10} {'MintX509SVID /s':34} {mint:10.0f} {raw_sign:10.0f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
