"""A real `plastron-server run` process over the fleet's datastore, and agents talking to it.

Agents get their identity the way real ones do: a join token made on the admin socket, then
AttestAgent over TLS (the agent ID is ``spiffe://example.org/spire/agent/join_token/<token>``,
so the token ``node-<i>`` makes fleet agent ``i``). Their node selectors are then written to
the shared datastore, which the server picks up from the change events like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from scale_fleet import TD

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

READY_TIMEOUT_S = 120.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_conf(tmp: Path, database_type: str, connection: str, port: int, health: int) -> str:
    return f"""
server {{ trust_domain = "{TD.name}" bind_address = "127.0.0.1" bind_port = {port}
  socket_path = "{tmp}/api.sock" data_dir = "{tmp}/data" log_level = "ERROR"
  ratelimit {{ attestation = false signing = false }} }}
plugins {{ DataStore "sql" {{ plugin_data {{
    database_type = "{database_type}" connection_string = "{connection}" }} }}
  KeyManager "memory" {{ plugin_data {{}} }} NodeAttestor "join_token" {{ plugin_data {{}} }} }}
health_checks {{ listener_enabled = true bind_address = "127.0.0.1" bind_port = {health} }}
"""


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    tmp: Path
    port: int
    health_port: int
    channels: list[Channel] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def memory_mib(self) -> tuple[float, float]:
        """(RSS now, peak RSS) of the server process."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def local(self) -> Channel:
        ch = Channel(path=str(self.tmp / "api.sock"))
        self.channels.append(ch)
        return ch

    def tls(self, bundle: Bundle, identity: AgentIdentity | None = None) -> Channel:
        ctx = client_ssl_context(
            trust_bundle=bundle.x509_certificates(),
            client_chain=identity.chain if identity else None,
            client_key=identity.key if identity else None,
        )
        ch: Channel = open_channel(
            ("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD)
        )
        self.channels.append(ch)
        return ch


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.asynccontextmanager
async def running_server(
    tmp: Path, database_type: str, connection: str
) -> AsyncIterator[tuple[ServerProcess, float]]:
    """Starts the server and yields it with the seconds from exec to ``/ready`` answering 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    port, health = free_port(), free_port()
    conf = tmp / "server.conf"
    conf.write_text(server_conf(tmp, database_type, connection, port, health))
    exe = Path(sys.executable).parent / "plastron-server"
    log = (tmp / "server.log").open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen([str(exe), "run", "-config", str(conf)], stdout=log, stderr=log)
    server = ServerProcess(proc, tmp, port, health)
    try:
        while not await asyncio.to_thread(_ready, health):
            if proc.poll() is not None or time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"server did not get ready; see {tmp / 'server.log'}")
            await asyncio.sleep(0.02)
        yield server, time.perf_counter() - started
    finally:
        for ch in server.channels:
            ch.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass(frozen=True)
class AgentIdentity:
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def attest(server: ServerProcess, bundle: Bundle, token: str) -> AgentIdentity:
    """A join token ``token`` made on the admin socket, then AttestAgent with it over TLS."""
    admin = agent_grpc.AgentStub(server.local())
    await admin.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600, token=token))
    key = ec.generate_private_key(ec.SECP256R1())
    params = agent_pb2.AttestAgentRequest.Params(
        data={"type": "join_token", "payload": token.encode()}, params={"csr": _csr(key)}
    )
    stub = agent_grpc.AgentStub(server.tls(bundle))
    async with stub.AttestAgent.open() as stream:
        await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
        resp = await stream.recv_message()
        await stream.end()
    if resp is None or resp.WhichOneof("step") != "result":
        raise RuntimeError(f"AttestAgent with token {token!r} did not return an SVID")
    chain = [x509.load_der_x509_certificate(c) for c in resp.result.svid.cert_chain]
    return AgentIdentity(chain, key)


async def get_authorized(stub: Any) -> int:
    resp = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    return len(resp.entries)


async def sync_authorized(stub: Any) -> int:
    """SyncAuthorizedEntries as an agent that already holds every entry at its revision (the
    steady state of a sync every 5 s): small sets come whole, larger ones as revision pages
    and nothing is asked for."""
    count = 0
    async with stub.SyncAuthorizedEntries.open() as stream:
        await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest())
        page = await stream.recv_message()
        while page is not None:
            count += len(page.entries) + len(page.entry_revisions)
            if not page.more:
                break
            page = await stream.recv_message()
        await stream.end()
    return count


def entry_stub(channel: Channel) -> Any:
    return entry_grpc.EntryStub(channel)
