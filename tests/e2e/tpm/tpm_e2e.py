"""Real processes for the ``tpm`` end-to-end tests: ``plastron-server run`` with NodeAttestor
"tpm", ``plastron-agent run`` with NodeAttestor "tpm" (and KeyManager "disk" or "tpm"), and a
private swtpm per test. Readiness is polled with deadlines; nothing sleeps to guess.

The server process is the e2e suite's :class:`PlastronServerProcess` (tests/e2e/conftest.py)
with a TPM-shaped config; the agent is the ``plastron-agent`` console script.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from swtpm_manufacture import SwtpmProcess
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR

from plastron.keymanager import PrivateKey
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.tpm.attestor import TpmAgentAttestor
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.e2e.conftest import PlastronServerProcess, free_port
from tests.processes import poll, stop_process

TD = "example.org"
DEADLINE = 60.0
BIN = Path(sys.executable).parent
T = TypeVar("T")
UNKNOWN_TPM = 'unknown NodeAttestor "tpm"'


def agent_knows_tpm() -> tuple[bool, str]:
    """Whether the real ``plastron-agent`` builds NodeAttestor "tpm" (and its message if not)."""
    with tempfile.TemporaryDirectory(prefix="pt-probe-", dir="/tmp") as tmp:
        conf = Path(tmp) / "agent.conf"
        conf.write_text(f"""
agent {{
  trust_domain = "{TD}"
  server_address = "127.0.0.1"
  server_port = {free_port()}
  data_dir = "{tmp}/data"
  socket_path = "{tmp}/api.sock"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "tpm" {{ plugin_data {{ tcti = "swtpm:path={tmp}/absent.sock" }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
""")
        out = subprocess.run(
            [str(BIN / "plastron-agent"), "run", "-config", str(conf)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    return UNKNOWN_TPM not in out.stderr, out.stderr.strip()


def ek_cert_files(template: Path) -> dict[str, x509.Certificate]:
    """The EK certificates swtpm_setup wrote next to the template state (by our ek_type)."""
    conf = template.parent / f"{template.name}-conf"
    out: dict[str, x509.Certificate] = {}
    for ek_type, name in (("rsa-2048", "ek-rsa2048.crt"), ("ecc-p384", "ek-secp384r1.crt")):
        data = (conf / name).read_bytes()
        out[ek_type] = (
            x509.load_pem_x509_certificate(data)
            if data.startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
    return out


def ek_hash(cert: x509.Certificate) -> str:
    """sha256 hex of the EK's SubjectPublicKeyInfo DER, computed from the certificate."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def extend_pcr(tcti: str, index: int, data: bytes = b"plastron-e2e") -> None:
    """Measure ``data`` into a PCR (TPM2_PCR_Event, what a boot measurement would do)."""
    name, _, conf = tcti.partition(":")
    with ESAPI(TCTILdr(name, conf)) as ectx:
        ectx.pcr_event(getattr(ESYS_TR, f"PCR{index}"), data)


def tpm_server_config(
    base: Path,
    port: int,
    socket_path: str,
    ca_path: Path,
    *,
    pcr_policy: Path | None = None,
    server_extra: str = "",
    attestor_block: str = "",
) -> str:
    policy = f'pcr_policy_path = "{pcr_policy}"' if pcr_policy else ""
    attestor_block = (
        attestor_block
        or f"""NodeAttestor "tpm" {{ plugin_data {{
    endorsement_ca_path = "{ca_path}"
    pcrs = [0, 7]
    {policy}
  }} }}"""
    )
    return f"""
server {{
  trust_domain = "{TD}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{socket_path}"
  data_dir = "{base}/data"
  log_level = "INFO"
  {server_extra}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
    connection_string = "{base}/data/datastore.sqlite3" }} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{base}/data/keys" }} }}
  {attestor_block}
}}
"""


def start_tpm_server(
    base: Path,
    ca_path: Path,
    *,
    pcr_policy: Path | None = None,
    server_extra: str = "",
    attestor_block: str = "",
) -> PlastronServerProcess:
    port = free_port()
    socket_path = str(base / "server.sock")
    config = base / "server.conf"
    config.write_text(
        tpm_server_config(
            base,
            port,
            socket_path,
            ca_path,
            pcr_policy=pcr_policy,
            server_extra=server_extra,
            attestor_block=attestor_block,
        )
    )
    env = dict(os.environ)
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    server = PlastronServerProcess(
        base=base,
        config_path=config,
        data_dir=base / "data",
        port=port,
        socket_path=socket_path,
        log_path=base / "server.log",
        env=env,
    )
    server.start()
    return server


NODE_ALIAS = f"spiffe://{TD}/tpm-nodes/ek"


def alias_and_workload(server: PlastronServerProcess, pubhash: str, workload: str) -> None:
    """A node alias on the TPM's EK hash, and ``workload`` (this uid) under it."""
    cli_ok(server, "entry", "create", "-node", "-spiffeID", NODE_ALIAS,
           "-selector", f"tpm:ek_pubhash:{pubhash}")  # fmt: skip
    cli_ok(server, "entry", "create", "-parentID", NODE_ALIAS, "-spiffeID", workload,
           "-selector", f"unix:uid:{os.geteuid()}")  # fmt: skip


def cli_ok(server: PlastronServerProcess, *args: str) -> str:
    out = server.run_cli(*args)
    assert out.returncode == 0, f"plastron-server {' '.join(args)}: {out.stderr}"
    return out.stdout


def agent_count(server: PlastronServerProcess) -> int:
    return int(cli_ok(server, "agent", "count").split()[0])


def agent_ids(server: PlastronServerProcess) -> list[str]:
    doc = json.loads(cli_ok(server, "agent", "list", "-output", "json"))
    return sorted(f"spiffe://{a['id']['trust_domain']}{a['id']['path']}" for a in doc["agents"])


def agent_show(server: PlastronServerProcess, spiffe_id: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        cli_ok(server, "agent", "show", "-spiffeID", spiffe_id, "-output", "json")
    )
    return out


@dataclass
class TpmAgent:
    """``plastron-agent run`` attesting with the ``tpm`` method."""

    base: Path
    server: PlastronServerProcess
    tcti: str
    ek_type: str = "auto"
    key_manager: str = "disk"
    attestor_block: str = ""
    env_extra: dict[str, str] = field(default_factory=dict)  # e.g. a tpm2-abrmd session bus
    # The command that is ``plastron-agent`` (a test may run it through ``python -c`` to set
    # module-level knobs first).
    launcher: list[str] = field(default_factory=lambda: [str(BIN / "plastron-agent")])
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    data_dir: Path = field(init=False)
    socket_path: str = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.base / "agent-data"
        self.socket_path = str(self.base / "agent" / "api.sock")
        bootstrap = self.base / "bootstrap.pem"
        bootstrap.write_text(cli_ok(self.server, "bundle", "show"))
        km = (
            f'KeyManager "tpm" {{ plugin_data {{ tcti = "{self.tcti}" }} }}'
            if self.key_manager == "tpm"
            else f'KeyManager "disk" {{ plugin_data {{ directory = "{self.data_dir}" }} }}'
        )
        attestor = self.attestor_block or (
            f'NodeAttestor "tpm" {{ plugin_data {{ tcti = "{self.tcti}" '
            f'ek_type = "{self.ek_type}" }} }}'
        )
        self.config = self.base / "agent.conf"
        self.config.write_text(
            f"""
agent {{
  trust_domain = "{TD}"
  server_address = "127.0.0.1"
  server_port = {self.server.port}
  data_dir = "{self.data_dir}"
  socket_path = "{self.socket_path}"
  trust_bundle_path = "{bootstrap}"
  log_level = "DEBUG"
  experimental {{ sync_interval = "1s" }}
}}
plugins {{
  {attestor}
  {km}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
        )

    @property
    def log_path(self) -> Path:
        return self.base / f"agent-{self.runs}.log"

    def start(self) -> None:
        """Start the agent process (returns at once; see :meth:`wait_healthy`)."""
        self.runs += 1
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.launcher, "run", "-config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.server.env, **self.env_extra},
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            if not self.running():
                raise AssertionError(f"agent exited:\n{self.log()}")
            return self.cli("healthcheck").returncode == 0

        poll("agent healthy", healthy)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "plastron-agent"), *args, "-socketPath", self.socket_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def fetched_ids(self) -> set[str]:
        out = self.cli("api", "fetch", "x509")
        if out.returncode != 0:
            return set()
        return {
            line.split("\t")[-1].strip()
            for line in out.stdout.splitlines()
            if line.startswith("SPIFFE ID")
        }


def restart_swtpm(tpm: SwtpmProcess) -> None:
    tpm.kill()
    tpm.start()


@dataclass
class HandDriven:
    """What a hand-driven AttestAgent stream ended with."""

    result: Any | None = None
    status: Status | None = None
    message: str = ""
    agent_error: Exception | None = None


async def drive_attestation(
    server: PlastronServerProcess,
    attestor: TpmAgentAttestor,
    *,
    on_challenge: Callable[[bytes], Awaitable[bytes | None]],
    key: PrivateKey | None = None,
) -> HandDriven:
    """Run AttestAgent over the server's TLS port with the agent half of ``tpm``; at the
    challenge, ``on_challenge`` decides the answer (None: send nothing and wait for the server).
    The CSR is signed by ``key`` (a fresh in-memory P-256 key by default)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    ctx = client_ssl_context(trust_bundle=server.bundle_certificates())
    channel = open_channel(
        ("127.0.0.1", server.port), ssl=ctx, expected_server_id=server_id(TrustDomain(TD))
    )
    out = HandDriven()
    try:
        stream_cm = agent_grpc.AgentStub(channel).AttestAgent.open(timeout=DEADLINE)
        async with stream_cm as stream:
            params = agent_pb2.AttestAgentRequest.Params(
                data={"type": "tpm", "payload": await attestor.payload()},
                params={"csr": csr.public_bytes(serialization.Encoding.DER)},
            )
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            msg = await stream.recv_message()
            while msg is not None and msg.WhichOneof("step") == "challenge":
                try:
                    answer = await on_challenge(bytes(msg.challenge))
                except Exception as exc:  # the agent half failed: abandon the stream
                    out.agent_error = exc
                    await stream.cancel()
                    return out
                if answer is not None:
                    await stream.send_message(
                        agent_pb2.AttestAgentRequest(challenge_response=answer)
                    )
                msg = await stream.recv_message()
            await stream.end()
            if msg is None:
                # The stream ended without a result: the status is in the trailers.
                await stream.recv_trailing_metadata()
            else:
                out.result = msg.result
    except GRPCError as exc:
        out.status, out.message = exc.status, exc.message or ""
    finally:
        channel.close()
    return out
