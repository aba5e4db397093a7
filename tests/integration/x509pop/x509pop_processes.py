"""A real ``plastron-server run`` process configured with NodeAttestor "x509pop", and a client
that runs AttestAgent against it over TLS with the x509pop agent half (or a scripted answer).

Readiness is polled through the admin socket's health check with a deadline; no sleeps.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.processes import free_port, log_tail, stop_process, wait_until_serving

TD = TrustDomain("example.org")
BIN = Path(sys.executable).parent
DEADLINE = 60.0
Answer = Callable[[bytes], Awaitable[bytes]]


def server_config(base: Path, port: int, x509pop_data: str, challenge_timeout: str) -> str:
    return f"""
server {{
  trust_domain = "{TD.name}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{base}/api.sock"
  data_dir = "{base}/data"
  log_level = "INFO"
  ratelimit {{ attestation = false }}
  experimental {{ challenge_timeout = "{challenge_timeout}" }}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
    connection_string = "{base}/data/ds.sqlite3" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "x509pop" {{ plugin_data {{ {x509pop_data} }} }}
}}
"""


@dataclass
class AttestOutcome:
    spiffe_id: SpiffeId
    reattestable: bool
    challenges: list[bytes]


class X509PopServer:
    def __init__(self, base: Path, x509pop_data: str, challenge_timeout: str = "30s") -> None:
        self.base = base
        self.port = free_port()
        self.socket_path = str(base / "api.sock")
        self.config_path = base / "server.conf"
        self.config_path.write_text(server_config(base, self.port, x509pop_data, challenge_timeout))
        self.log_path = base / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path | None = None) -> None:
        """Run the server (from ``cwd``, or this process's working directory)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "plastron-server"), "run", "-config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )
        wait_until_serving(self.process, self.socket_path, DEADLINE, self.log)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return log_tail(self.log_path)

    # ---- admin (local socket) -------------------------------------------------------------

    async def agents(self) -> list[agent_pb2.Agent]:
        channel = Channel(path=self.socket_path)
        try:
            resp = await agent_grpc.AgentStub(channel).ListAgents(agent_pb2.ListAgentsRequest())
            return list(resp.agents)
        finally:
            channel.close()

    async def bundle(self) -> list[x509.Certificate]:
        channel = Channel(path=self.socket_path)
        try:
            resp = await bundle_grpc.BundleStub(channel).GetBundle(bundle_pb2.GetBundleRequest())
            return [x509.load_der_x509_certificate(a.asn1) for a in resp.x509_authorities]
        finally:
            channel.close()

    # ---- AttestAgent over TLS, as an agent ------------------------------------------------

    async def attest(
        self, payload: bytes, answer: Answer | None, timeout: float = 60
    ) -> AttestOutcome:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        ctx = client_ssl_context(trust_bundle=await self.bundle())
        channel = open_channel(("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD))
        challenges: list[bytes] = []
        try:
            async with agent_grpc.AgentStub(channel).AttestAgent.open(timeout=timeout) as stream:
                params = agent_pb2.AttestAgentRequest.Params(
                    data={"type": "x509pop", "payload": payload}, params={"csr": csr}
                )
                await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
                while True:
                    resp = await stream.recv_message()
                    if resp is None:
                        await stream.end()
                        await stream.recv_trailing_metadata()  # raises the server status
                        raise AssertionError("stream ended without result or error")
                    if resp.WhichOneof("step") == "result":
                        break
                    challenges.append(resp.challenge)
                    if answer is None:
                        continue  # never answer: wait for the server's verdict
                    reply = await answer(resp.challenge)
                    await stream.send_message(
                        agent_pb2.AttestAgentRequest(challenge_response=reply)
                    )
                await stream.end()
        finally:
            channel.close()
        svid = resp.result.svid
        return AttestOutcome(
            SpiffeId.from_parts(svid.id.trust_domain, svid.id.path),
            resp.result.reattestable,
            challenges,
        )
