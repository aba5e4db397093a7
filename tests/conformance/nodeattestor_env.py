"""Where the NodeAttestor conformance suite runs its attempts: a Plastron server on SQLite in a
private temporary directory, in-process (the attestor is called through its own interface, and
through AttestAgent over TLS) or as a real ``plastron-server run`` process (AttestAgent only).

An :class:`Attempt` is what one agent sends: a payload and a function that answers each
challenge. Both ways of running it report the outcome instead of raising, so a test can say
what it expected. The datastore is read straight from the SQLite file (read-only), so "no node
row" is checked on what the server actually wrote.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from plastron.attestors.base import AttestationResult, ServerNodeAttestor
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.server.runtime import PlastronServer
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.e2e.conftest import PlastronServerProcess
from tests.integration.server.server_harness import running_server, server_conf
from tests.processes import free_port

TD = TrustDomain("example.org")
AnswerFn = Callable[[bytes], Awaitable[bytes]]
# The tables a node attestation writes; a refused attempt must leave them as they were.
NODE_TABLES = ("attested_node_entries", "node_resolver_map_entries", "attested_node_entries_events")
API_TIMEOUT = 60.0
# The server settings every conformance server shares: no attestation rate limit (a test makes
# dozens of attempts from 127.0.0.1), and a short challenge deadline.
SERVER_SETTINGS = """
  ratelimit { attestation = false }
  experimental { challenge_timeout = "20s" }
"""


class Abandon(Exception):
    """Raised by an answer function to walk away from an attempt at its first challenge."""


@dataclass
class Attempt:
    """What one agent sends: ``payload``, then ``answer(challenge)`` for each challenge."""

    payload: bytes
    answer: AnswerFn
    label: str = ""


async def no_challenge_expected(challenge: bytes) -> bytes:
    raise AssertionError(f"no challenge was expected, got {challenge[:80]!r}")


@dataclass
class ApiOutcome:
    """How an AttestAgent stream ended: a result (``agent_id``), a status, or abandoned."""

    agent_id: str = ""
    status: Status | None = None
    message: str = ""
    abandoned: bool = False
    challenges: list[bytes] = field(default_factory=list)


@dataclass
class AttestEnv:
    """A running server: its TLS port, admin socket and SQLite file (and, in-process, itself)."""

    base: Path
    port: int
    socket_path: str
    db_path: Path
    server: PlastronServer | None = None
    log_path: Path | None = None  # a server process's log

    # ---- the attestor, called directly (in-process only) ----------------------------------

    def attestor(self, kind: str) -> ServerNodeAttestor:
        assert self.server is not None and self.server.api is not None, "in-process only"
        return self.server.api.attestors[kind]

    async def attest_direct(self, kind: str, attempt: Attempt) -> AttestationResult | Exception:
        """``attestor.attest`` with the attempt's answers; the error it raised, if any."""
        try:
            return await self.attestor(kind).attest(attempt.payload, attempt.answer)
        except Exception as exc:  # the caller judges which errors are clean refusals
            return exc

    # ---- the admin socket ------------------------------------------------------------------

    async def create_join_token(self, ttl: int = 600, token: str = "") -> str:
        channel = Channel(path=self.socket_path)
        try:
            resp = await agent_grpc.AgentStub(channel).CreateJoinToken(
                agent_pb2.CreateJoinTokenRequest(ttl=ttl, token=token), timeout=API_TIMEOUT
            )
            return str(resp.value)
        finally:
            channel.close()

    async def bundle(self) -> list[x509.Certificate]:
        channel = Channel(path=self.socket_path)
        try:
            resp = await bundle_grpc.BundleStub(channel).GetBundle(
                bundle_pb2.GetBundleRequest(), timeout=API_TIMEOUT
            )
            return [x509.load_der_x509_certificate(a.asn1) for a in resp.x509_authorities]
        finally:
            channel.close()

    # ---- the datastore, read from its file -------------------------------------------------

    def node_rows(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of the node tables (read-only connection to the live SQLite file)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return {
                table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in NODE_TABLES
            }
        finally:
            conn.close()

    # ---- AttestAgent over TLS, as an agent ------------------------------------------------

    async def attest_api(self, kind: str, attempt: Attempt) -> ApiOutcome:
        ctx = client_ssl_context(trust_bundle=await self.bundle())
        channel = open_channel(("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD))
        out = ApiOutcome()
        try:
            async with agent_grpc.AgentStub(channel).AttestAgent.open(
                timeout=API_TIMEOUT
            ) as stream:
                await stream.send_message(_params(kind, attempt.payload))
                if await _run_rounds(stream, attempt.answer, out):
                    await stream.end()
        except GRPCError as exc:
            out.status, out.message = exc.status, exc.message or ""
        except StreamTerminatedError as exc:  # the server reset the stream: no status at all
            out.status, out.message = Status.UNKNOWN, f"stream terminated: {exc}"
        finally:
            channel.close()
        return out


async def _run_rounds(stream: object, answer: AnswerFn, out: ApiOutcome) -> bool:
    """Answer challenges until the result; False when the attempt was abandoned."""
    while True:
        msg = await stream.recv_message()  # type: ignore[attr-defined]
        if msg is None:
            await stream.end()  # type: ignore[attr-defined]
            await stream.recv_trailing_metadata()  # type: ignore[attr-defined]  # raises status
            raise AssertionError("AttestAgent ended without a result or a status")
        if msg.WhichOneof("step") == "result":
            svid_id = msg.result.svid.id
            out.agent_id = f"spiffe://{svid_id.trust_domain}{svid_id.path}"
            return True
        out.challenges.append(bytes(msg.challenge))
        try:
            reply = await answer(bytes(msg.challenge))
        except Abandon:
            out.abandoned = True
            await stream.cancel()  # type: ignore[attr-defined]
            return False
        await stream.send_message(  # type: ignore[attr-defined]
            agent_pb2.AttestAgentRequest(challenge_response=reply)
        )


def _params(kind: str, payload: bytes) -> agent_pb2.AttestAgentRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    return agent_pb2.AttestAgentRequest(
        params=agent_pb2.AttestAgentRequest.Params(
            data={"type": kind, "payload": payload}, params={"csr": csr}
        )
    )


def short_tmp(prefix: str) -> Path:
    """A fresh directory under /tmp: Unix socket paths must stay under ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextlib.asynccontextmanager
async def in_process_env(plugins: str) -> AsyncIterator[AttestEnv]:
    """An in-process server with ``plugins`` (NodeAttestor blocks) beside join_token."""
    base = short_tmp("pt-na-")
    try:
        async with running_server(
            base, extra_server=SERVER_SETTINGS, extra_plugins=plugins
        ) as harness:
            yield AttestEnv(
                base=base,
                port=harness.port,
                socket_path=harness.socket_path,
                db_path=base / "data" / "datastore.sqlite3",
                server=harness.server,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def process_env(plugins: str) -> Iterator[AttestEnv]:
    """A real ``plastron-server run`` process with ``plugins`` beside join_token."""
    base = short_tmp("pt-nap-")
    port = free_port()
    process = PlastronServerProcess.in_dir(
        base, port, server_conf(base, port, SERVER_SETTINGS, plugins)
    )
    try:
        process.start()
        yield AttestEnv(
            base=base,
            port=port,
            socket_path=process.socket_path,
            db_path=base / "data" / "datastore.sqlite3",
            log_path=process.log_path,
        )
    finally:
        process.stop()
        shutil.rmtree(base, ignore_errors=True)
