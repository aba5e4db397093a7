"""``join_token`` and ``x509pop`` attestation through a real ``plastron-server`` process (TLS,
AttestAgent stream, CA signing, node record written), beside a raw ECDSA P-256 sign.

Prints, per method: sequential AttestAgent latency p50, attestations/s with C concurrent agents
(``ratelimit { attestation = false }``), the server process's CPU per attestation, and, measured
in the same run, the raw limit: ECDSA P-256 signatures/s in this process (the CA's key type,
which signs every agent SVID, and the x509pop node key's, which signs every challenge) and the
ratio. join_token: each attestation spends a token made beforehand over the admin socket (one
message, no challenge, trust on first use). x509pop: each agent has its own node certificate from
a CA the server trusts and answers a nonce challenge (re-attests in place). Usage:
    .venv/bin/python bench/attest_server.py [--rounds N] [--concurrency C] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attest_harness import Measured, Server, attest_once, make_csr, rate

from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2

# Tokens made per second of the rate phase: above what one server attests (they are one-time).
TOKENS_PER_SECOND = 250
TOKEN_MAKERS = 8


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    ca = subject == issuer
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )


def make_node_pki(base: Path, agents: int) -> tuple[Path, list[X509PopAgentAttestor]]:
    """A node CA (its certificate file for the server) and one x509pop agent half per agent."""
    base.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_path = base / "node-ca.pem"
    ca_path.write_bytes(
        _cert("bench node CA", ca_key, "bench node CA", ca_key).public_bytes(
            serialization.Encoding.PEM
        )
    )
    halves = []
    for i in range(agents):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert(f"node-{i}", key, "bench node CA", ca_key)
        (base / f"node-{i}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (base / f"node-{i}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        config = X509PopAgentConfig(
            certificate_path=base / f"node-{i}.pem", private_key_path=base / f"node-{i}.key"
        )
        halves.append(X509PopAgentAttestor(config))
    return ca_path, halves


async def make_tokens(server: Server, count: int) -> list[str]:
    """``count`` join tokens made over the admin socket before any timing starts."""
    channel = Channel(path=str(server.sock))
    stub = agent_grpc.AgentStub(channel)
    tokens: list[str] = []

    async def maker(n: int) -> None:
        for _ in range(n):
            made = await stub.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=3600))
            tokens.append(made.value)

    try:
        share, extra = divmod(count, TOKEN_MAKERS)
        await asyncio.gather(*(maker(share + (i < extra)) for i in range(TOKEN_MAKERS)))
    finally:
        channel.close()
    return tokens


def join_token_attest(server: Server, tokens: list[str], csr: bytes) -> Awaitable[float]:
    if not tokens:
        raise LookupError("bench: out of join tokens")
    token = tokens.pop()

    async def payload() -> bytes:
        return token.encode()

    return attest_once(server, "join_token", payload, None, csr)


def x509pop_attest(server: Server, agent: X509PopAgentAttestor, csr: bytes) -> Awaitable[float]:
    return attest_once(server, "x509pop", agent.payload, agent.answer, csr)


def raw_sign_rate(seconds: float) -> float:
    """ECDSA P-256 (SHA-256) signatures/s in this process, one thread."""
    key = ec.generate_private_key(ec.SECP256R1())
    data, algorithm = b"x" * 64, ec.ECDSA(hashes.SHA256())
    done, end = 0, time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < end:
        for _ in range(50):
            key.sign(data, algorithm)
        done += 50
    return done / (time.monotonic() - start)


def p50_ms(samples: list[float]) -> float:
    return sorted(samples)[len(samples) // 2] * 1000


def row(method: str, agents: int, seq: list[float], served: Measured, raw: float) -> str:
    return (
        f"{method:<12}{agents:>7}{p50_ms(seq):>9.1f}{served.per_second:>10.1f}"
        f"{served.server_ms_per_call:>12.2f}{raw:>12.0f}{served.per_second / raw:>8.4f}"
    )


async def measure(
    method: str, calls: list[Callable[[], Awaitable[float]]], rounds: int, seconds: float, s: Server
) -> tuple[list[float], Measured]:
    await calls[0]()  # warm-up
    sequential = [await calls[0]() for _ in range(rounds)]
    return sequential, await rate(seconds, calls, s)


async def run(base: Path, rounds: int, concurrency: int, seconds: float) -> None:
    ca_path, halves = make_node_pki(base / "pki", concurrency)
    (base / "srv").mkdir()
    server = Server(
        base / "srv",
        f"""NodeAttestor "join_token" {{ plugin_data {{}} }}
  NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{ca_path}" }} }}""",
    )
    try:
        csr = make_csr()
        tokens = await make_tokens(server, rounds + 1 + int(seconds * TOKENS_PER_SECOND))
        joins = [partial(join_token_attest, server, tokens, csr)] * concurrency
        pops = [partial(x509pop_attest, server, a, csr) for a in halves]
        print(
            f"{'method':<12}{'agents':>7}{'p50 ms':>9}{'att/s':>10}{'srv CPU ms':>12}"
            f"{'raw sign/s':>12}{'ratio':>8}"
        )
        for method, calls in (("join_token", joins), ("x509pop", pops)):
            sequential, served = await measure(method, calls, rounds, seconds, server)
            raw = raw_sign_rate(min(seconds, 1.0))
            print(row(method, concurrency, sequential, served, raw))
            if method == "join_token" and not tokens:
                print("  (ran out of join tokens before the end: raise TOKENS_PER_SECOND)")
        count = server.cli("agent", "count").stdout.strip()
        print(f"\nserver now holds {count} (one per join token, one per x509pop node)")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    ns = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pl-bench-att-", dir="/tmp"))  # short socket paths
    try:
        asyncio.run(run(base, ns.rounds, ns.concurrency, ns.seconds))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
