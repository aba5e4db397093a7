"""End-to-end fixtures: a real ``plastron-server run`` process and a way to drive its CLI.

``plastron_server`` starts the server exactly as a user would (``python -m
plastron.server.cli.main run -config server.conf``) on SQLite, the memory KeyManager and the
join_token attestor, waits for the admin socket to answer a health check (with a deadline,
no sleeps for readiness), and stops it with SIGTERM afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.processes import free_port, log_tail, stop_process, wait_until_serving

TRUST_DOMAIN = "example.org"
START_DEADLINE_SECONDS = 60.0
CLI_TIMEOUT_SECONDS = 60.0


def server_config(base: Path, port: int, socket_path: Path, extra_server: str = "") -> str:
    return f"""
server {{
  trust_domain = "{TRUST_DOMAIN}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{socket_path}"
  data_dir = "{base}/data"
  log_level = "DEBUG"
  {extra_server}
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{base}/data/datastore.sqlite3"
    }}
  }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""


@dataclass
class AgentIdentity:
    spiffe_id: SpiffeId
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


@dataclass
class PlastronServerProcess:
    base: Path
    config_path: Path
    data_dir: Path
    port: int
    socket_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def in_dir(
        cls,
        base: Path,
        port: int,
        config: str,
        *,
        log_name: str = "server.log",
        env: dict[str, str] | None = None,
    ) -> PlastronServerProcess:
        """A server living in ``base``: ``config`` written to server.conf, data under data/, the
        admin socket at api.sock. Its environment is this process's without
        SPIFFE_ENDPOINT_SOCKET (so it never finds an agent's) unless ``env`` is given."""
        config_path = base / "server.conf"
        config_path.write_text(config)
        if env is None:
            env = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
        return cls(
            base=base,
            config_path=config_path,
            data_dir=base / "data",
            port=port,
            socket_path=str(base / "api.sock"),
            log_path=base / log_name,
            env=env,
        )

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "plastron.server.cli.main",
                "run",
                "-config",
                str(self.config_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.base,
        )
        log.close()
        wait_until_serving(self.process, self.socket_path, START_DEADLINE_SECONDS, self.log)

    def log(self) -> str:
        return log_tail(self.log_path, 4000)

    def stop(self) -> None:
        stop_process(self.process)

    def run_cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``plastron-server <args>`` against this server's socket (added unless given)."""
        argv = list(args)
        if "-socketPath" not in argv and argv[:1] not in (["run"], ["validate"]):
            argv += ["-socketPath", self.socket_path]
        return subprocess.run(
            [sys.executable, "-m", "plastron.server.cli.main", *argv],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
            env=self.env,
            cwd=self.base,
            check=False,
        )

    def bundle_certificates(self) -> list[x509.Certificate]:
        out = self.run_cli("bundle", "show")
        assert out.returncode == 0, out.stderr
        return x509.load_pem_x509_certificates(out.stdout.encode())

    def attest_join_token(self, token: str) -> AgentIdentity:
        """Attest an agent over the TLS port with a join token, as an agent would."""
        return asyncio.run(self._attest(token))

    async def _attest(self, token: str) -> AgentIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        ctx = client_ssl_context(trust_bundle=self.bundle_certificates())
        channel = open_channel(
            ("127.0.0.1", self.port),
            ssl=ctx,
            expected_server_id=server_id(TrustDomain(TRUST_DOMAIN)),
        )
        try:
            stub = agent_grpc.AgentStub(channel)
            async with stub.AttestAgent.open(timeout=30) as stream:
                await stream.send_message(
                    agent_pb2.AttestAgentRequest(
                        params=agent_pb2.AttestAgentRequest.Params(
                            data={"type": "join_token", "payload": token.encode()},
                            params={"csr": csr},
                        )
                    )
                )
                resp = await stream.recv_message()
                await stream.end()
        finally:
            channel.close()
        assert resp is not None and resp.WhichOneof("step") == "result", resp
        svid = resp.result.svid
        chain = [x509.load_der_x509_certificate(c) for c in svid.cert_chain]
        return AgentIdentity(SpiffeId.from_parts(svid.id.trust_domain, svid.id.path), chain, key)


def _short_tmp() -> Path:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix="pl-e2e-", dir="/tmp"))


@pytest.fixture
def plastron_server() -> Iterator[PlastronServerProcess]:
    base = _short_tmp()
    port = free_port()
    server = PlastronServerProcess.in_dir(base, port, server_config(base, port, base / "api.sock"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
