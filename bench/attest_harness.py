"""What the attestation benchmarks through a real server share: a ``plastron-server run``
process with the NodeAttestors a benchmark names, one AttestAgent as an agent makes it at
start-up (fresh TLS connection, params, challenge rounds, result), the rate of C concurrent
agents, and the server process's CPU time (its share of the work, steadier than a rate on a
shared machine)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.errors import AttestationFailed
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.spiffe.x509svid import load_pem_certificates
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

TD = "example.org"
BIN = Path(sys.executable).parent
START_DEADLINE = 60.0
Payload = Callable[[], Awaitable[bytes]]
Answer = Callable[[bytes], Awaitable[bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``plastron-server run`` with the given NodeAttestor blocks and attestation rate limits
    off, on SQLite and an in-memory KeyManager."""

    def __init__(self, base: Path, node_attestors: str) -> None:
        self.base, self.port, self.sock = base, free_port(), base / "server.sock"
        conf = base / "server.conf"
        conf.write_text(f"""
server {{
  trust_domain = "{TD}"
  bind_address = "127.0.0.1"
  bind_port = {self.port}
  socket_path = "{self.sock}"
  data_dir = "{base}/data"
  log_level = "WARN"
  ratelimit {{ attestation = false }}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
    connection_string = "{base}/data/datastore.sqlite3" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  {node_attestors}
}}
""")
        with (base / "server.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "plastron-server"), "run", "-config", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_DEADLINE
        while self.cli("healthcheck", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start (logs in {base})")
            time.sleep(0.1)  # polling with a deadline
        self.bundle = load_pem_certificates(self.cli("bundle", "show").stdout.encode())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(BIN / "plastron-server"), *args, "-socketPath", str(self.sock)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"plastron-server {' '.join(args)}: {out.stderr}")
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


async def attest_once(
    server: Server, kind: str, payload: Payload, answer: Answer | None, csr: bytes
) -> float:
    """One AttestAgent over a fresh TLS connection, as an agent at start-up; seconds taken."""
    start = time.perf_counter()
    ctx = client_ssl_context(trust_bundle=server.bundle)
    channel = open_channel(
        ("127.0.0.1", server.port), ssl=ctx, expected_server_id=server_id(TrustDomain(TD))
    )
    try:
        async with agent_grpc.AgentStub(channel).AttestAgent.open(timeout=60) as stream:
            params = agent_pb2.AttestAgentRequest.Params(
                data={"type": kind, "payload": await payload()}, params={"csr": csr}
            )
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            msg = await stream.recv_message()
            while msg is not None and msg.WhichOneof("step") == "challenge" and answer:
                reply = await answer(bytes(msg.challenge))
                await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=reply))
                msg = await stream.recv_message()
            if msg is None or msg.WhichOneof("step") != "result":
                raise AttestationFailed(f"bench: {kind} attestation ended without a result")
            await stream.end()
    finally:
        channel.close()
    return time.perf_counter() - start


def make_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


class Measured(NamedTuple):
    """A rate phase: calls completed, wall seconds, and the server's CPU seconds meanwhile."""

    calls: int
    seconds: float
    server_cpu: float = 0.0

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def server_ms_per_call(self) -> float:
        return self.server_cpu * 1000 / max(1, self.calls)


async def rate(
    seconds: float, workers: list[Callable[[], Awaitable[object]]], server: Server | None = None
) -> Measured:
    """One task per worker calling it for ``seconds``; a worker whose call raises
    ``LookupError`` (out of one-time inputs, as join tokens) stops early."""
    done = 0
    end = time.monotonic() + seconds

    async def loop(work: Callable[[], Awaitable[object]]) -> None:
        nonlocal done
        while time.monotonic() < end:
            try:
                await work()
            except LookupError:
                return
            done += 1

    cpu_before = server.cpu_seconds() if server else 0.0
    start = time.monotonic()
    await asyncio.gather(*(loop(w) for w in workers))
    elapsed = time.monotonic() - start
    return Measured(done, elapsed, server.cpu_seconds() - cpu_before if server else 0.0)
