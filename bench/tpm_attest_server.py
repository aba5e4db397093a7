"""``tpm`` attestation through a real ``plastron-server`` process (TLS, AttestAgent stream, CA
signing, node record written), with swtpm as each agent's TPM.

Prints one table: per EK type, sequential AttestAgent latency p50/p99 and, in the same run, the
plugin-level round trip without the server (bench/tpm_attest.py's figure: both halves
in-process), and the ratio. Then attestations/s for one server (``ratelimit { attestation =
false }``) with C concurrent agents, each on its own swtpm with its own EKs, next to the
plugin-level rate at the same concurrency. Usage:
    .venv/bin/python bench/tpm_attest_server.py [--rounds N] [--concurrency C] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "swtpm-tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from swtpm_manufacture import (
    ManufacturerCa,
    SwtpmProcess,
    make_manufacturer_ca,
    manufacture,
)
from tpm_attest import pct, round_trip

from plastron.errors import AttestationFailed
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.spiffe.x509svid import load_pem_certificates
from plastron.tpm.attestor import TpmAgentAttestor, TpmServerAttestor, TpmServerConfig
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

TD = "example.org"
BIN = Path(sys.executable).parent
START_DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``plastron-server run`` with NodeAttestor "tpm" and attestation rate limits off."""

    def __init__(self, base: Path, ca: ManufacturerCa) -> None:
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
  NodeAttestor "tpm" {{ plugin_data {{
    endorsement_ca_path = "{ca.dir / "ca-cert.pem"}" pcrs = [0, 7] }} }}
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


async def attest_once(server: Server, agent: TpmAgentAttestor, csr: bytes) -> float:
    """One AttestAgent over a fresh TLS connection, as an agent at start-up; seconds taken."""
    start = time.perf_counter()
    ctx = client_ssl_context(trust_bundle=server.bundle)
    channel = open_channel(
        ("127.0.0.1", server.port), ssl=ctx, expected_server_id=server_id(TrustDomain(TD))
    )
    try:
        async with agent_grpc.AgentStub(channel).AttestAgent.open(timeout=60) as stream:
            params = agent_pb2.AttestAgentRequest.Params(
                data={"type": "tpm", "payload": await agent.payload()}, params={"csr": csr}
            )
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            msg = await stream.recv_message()
            while msg is not None and msg.WhichOneof("step") == "challenge":
                answer = await agent.answer(bytes(msg.challenge))
                await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))
                msg = await stream.recv_message()
            if msg is None or msg.WhichOneof("step") != "result":
                raise AttestationFailed("bench: attestation ended without a result")
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


async def rate(seconds: float, workers: list[Callable[[], Awaitable[float]]]) -> float:
    """Attestations/s with one task per worker (each its own swtpm) for ``seconds``."""
    done = 0
    end = time.monotonic() + seconds

    async def loop(work: Callable[[], Awaitable[float]]) -> None:
        nonlocal done
        while time.monotonic() < end:
            await work()
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(loop(w) for w in workers))
    return done / (time.monotonic() - start)


async def run(base: Path, rounds: int, concurrency: int, seconds: float) -> None:
    ca = make_manufacturer_ca(base / "ca")
    tpms: list[SwtpmProcess] = []
    (base / "srv").mkdir()
    server = Server(base / "srv", ca)
    try:
        for i in range(concurrency):
            tpms.append(SwtpmProcess(manufacture(base / f"tpm{i}", ca)))
            tpms[-1].start()
        plugin = TpmServerAttestor(
            TpmServerConfig(endorsement_ca_path=str(ca.dir / "ca-cert.pem"), pcrs=(0, 7)),
            TrustDomain(TD),
        )
        csr = make_csr()
        print(f"{'EK':<10}{'rounds':>7}{'p50 ms':>9}{'p99 ms':>9}{'plugin p50':>12}{'ratio':>7}")
        for ek_type in ("rsa-2048", "ecc-p384"):
            agent = TpmAgentAttestor(tpms[0].tcti, ek_type)
            await attest_once(server, agent, csr)  # warm-up
            trips = [await attest_once(server, agent, csr) for _ in range(rounds)]
            local = [await round_trip(plugin, agent) for _ in range(rounds)]
            p50, p99, l50 = pct(trips, 0.5), pct(trips, 0.99), pct(local, 0.5)
            print(f"{ek_type:<10}{rounds:>7}{p50:>9.1f}{p99:>9.1f}{l50:>12.1f}{p50 / l50:>7.2f}")
        print(f"\n{'EK':<10}{'agents':>7}{'server att/s':>14}{'plugin att/s':>14}{'ratio':>7}")
        for ek_type in ("rsa-2048", "ecc-p384"):
            agents = [TpmAgentAttestor(t.tcti, ek_type) for t in tpms]
            via_server = await rate(seconds, [partial(attest_once, server, a, csr) for a in agents])
            in_process = await rate(seconds, [partial(round_trip, plugin, a) for a in agents])
            ratio = via_server / in_process
            print(
                f"{ek_type:<10}{concurrency:>7}{via_server:>14.1f}{in_process:>14.1f}{ratio:>7.2f}"
            )
        count = server.cli("agent", "count").stdout.strip()
        print(f"\nserver now holds {count} (one node record per EK, re-attested in place)")
    finally:
        for tpm in tpms:
            tpm.kill()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    ns = parser.parse_args()
    os.environ.setdefault("TSS2_LOG", "all+none")
    base = Path(tempfile.mkdtemp(prefix="pl-bench-tpm-", dir="/tmp"))  # short socket paths
    try:
        asyncio.run(run(base, ns.rounds, ns.concurrency, ns.seconds))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
