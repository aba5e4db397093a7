"""The raw limit of bench/scale.py's agent calls: the server's transport alone.

Run as ``scale_raw.py serve DIR`` it serves, on a free 127.0.0.1 port, the server's own gRPC
stack (``plastron.transport.server.start_server``: ``BoundedServer`` with the server's limits,
its TLS listener and codec) answering ``Entry/GetAuthorizedEntries`` with the bytes in
``DIR/payload.bin`` as they are (a response the real server gave, already encoded) and
``Entry/SyncAuthorizedEntries`` with one empty page; no authorization, metrics, audit or cache.
It makes a throwaway CA, its own X509-SVID and an agent's, writes the CA and the agent's
certificate and key to DIR, prints the port and serves until killed.

``raw_rows`` runs it and times the same calls as bench/scale_rpc.py over the same mTLS client
(``open_channel``): what the figures of the real server would be with nothing of its own.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Cardinality, Handler
from scale_fleet import TD

from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.server.services import server_grpc_limits
from plastron.spiffe.ids import server_id
from plastron.transport.client import open_channel
from plastron.transport.codec import Encoded
from plastron.transport.limits import ConnectionLimits
from plastron.transport.server import start_server
from plastron.transport.tls import client_ssl_context, server_ssl_context

ENTRY = "/spire.api.server.entry.v1.Entry"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cert(
    subject_key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    uri: str,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uri)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (name, subject_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _pki(directory: Path) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """(CA, server SVID, its key); the agent's SVID and key are written to ``directory``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(ca_key, None, f"spiffe://{TD.name}")
    signer = (ca.subject, ca_key)
    server_key, agent_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    server = _cert(server_key, signer, str(server_id(TD)))
    agent = _cert(agent_key, signer, f"spiffe://{TD.name}/spire/agent/raw/0")
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "agent.pem").write_bytes(agent.public_bytes(pem))
    (directory / "agent.key").write_bytes(
        agent_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca, server, server_key


class RawEntryService:
    """GetAuthorizedEntries: the stored payload; SyncAuthorizedEntries: one empty page."""

    def __init__(self, payload: bytes) -> None:
        self._payload = Encoded(payload, entry_pb2.GetAuthorizedEntriesResponse)

    async def get(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(self._payload)

    async def sync(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(entry_pb2.SyncAuthorizedEntriesResponse())

    def __mapping__(self) -> dict[str, Handler]:
        return {
            f"{ENTRY}/GetAuthorizedEntries": Handler(
                self.get,
                Cardinality.UNARY_UNARY,
                entry_pb2.GetAuthorizedEntriesRequest,
                entry_pb2.GetAuthorizedEntriesResponse,
            ),
            f"{ENTRY}/SyncAuthorizedEntries": Handler(
                self.sync,
                Cardinality.STREAM_STREAM,
                entry_pb2.SyncAuthorizedEntriesRequest,
                entry_pb2.SyncAuthorizedEntriesResponse,
            ),
        }


async def _serve(directory: Path) -> None:
    ca, server, key = _pki(directory)
    running = await start_server(
        [RawEntryService((directory / "payload.bin").read_bytes())],
        tcp=("127.0.0.1", 0),
        ssl=server_ssl_context([server], key, lambda: [ca]),
        limits=server_grpc_limits(ConnectionLimits()),
    )
    assert running.tcp_address is not None
    print(running.tcp_address[1], flush=True)
    await asyncio.Event().wait()


class RawServer:
    """``scale_raw.py serve`` in a child process, and an agent's channel to it."""

    def __init__(self, directory: Path, payload: bytes) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "payload.bin").write_bytes(payload)
        self.payload_bytes = len(payload)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", str(directory)],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        ctx = client_ssl_context(
            trust_bundle=[x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())],
            client_chain=[x509.load_pem_x509_certificate((directory / "agent.pem").read_bytes())],
            client_key=serialization.load_pem_private_key(  # type: ignore[arg-type]
                (directory / "agent.key").read_bytes(), None
            ),
        )
        self.channel = open_channel(("127.0.0.1", port), ssl=ctx, expected_server_id=server_id(TD))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def close(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def call_cpu(server: Any, call: Any, stub: Any, times: int) -> tuple[list[float], float]:
    """Latencies of ``times`` calls and the server's CPU seconds per call."""
    start_cpu, lat = server.cpu_seconds(), []
    for _ in range(times):
        start = time.perf_counter()
        await call(stub)
        lat.append(time.perf_counter() - start)
    return lat, (server.cpu_seconds() - start_cpu) / times


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"] or len(sys.argv) != 3:
        sys.exit("usage: scale_raw.py serve DIR")
    asyncio.run(_serve(Path(sys.argv[2])))
