"""A real ``plastron-server run`` process for the security suites, and the callers they need.

The server is started as a user would start it and is reached only over its sockets: the admin
Unix socket (the "local" caller) and the TCP port with TLS, with or without a client X509-SVID.
Caller identities are obtained the ordinary way: an agent attests with a join token over TLS;
admin, downstream and workload SVIDs are minted through the admin socket's MintX509SVID.
Readiness is polled through the admin socket's health check with a deadline; no sleeps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.processes import free_port, log_tail, stop_process, wait_until_serving

TD = TrustDomain("example.org")
START_DEADLINE = 60.0
CALL_TIMEOUT = 30.0


def sqlite_datastore(base: Path) -> str:
    return (
        'DataStore "sql" { plugin_data { database_type = "sqlite3"\n'
        f'  connection_string = "{base}/data/ds.sqlite3" }} }}'
    )


def server_config(base: Path, port: int, extra_server: str, plugins: str) -> str:
    return f"""
server {{
  trust_domain = "{TD.name}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{base}/api.sock"
  data_dir = "{base}/data"
  log_level = "DEBUG"
  ratelimit {{
    attestation = false
    signing = false
  }}
  {extra_server}
}}
plugins {{
  {plugins}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""


@dataclass
class Identity:
    """An X509-SVID and its key, as a TLS client presents it."""

    spiffe_id: SpiffeId
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


def make_csr(
    key: ec.EllipticCurvePrivateKey,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    common_name: str = "csr",
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def entry_message(
    spiffe_path: str, parent: SpiffeId, selector: str, **flags: object
) -> types_entry.Entry:
    kind, _, value = selector.partition(":")
    return types_entry.Entry(
        spiffe_id={"trust_domain": TD.name, "path": spiffe_path},
        parent_id={"trust_domain": parent.trust_domain.name, "path": parent.path},
        selectors=[{"type": kind, "value": value}],
        **flags,  # type: ignore[arg-type]
    )


@dataclass
class AttestOutcome:
    identity: Identity
    challenges: list[bytes]


Answer = Callable[[bytes], Awaitable[bytes]]


@dataclass
class ServerProcess:
    base: Path
    extra_server: str = ""
    plugins: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    channels: list[Channel] = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return str(self.base / "api.sock")

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    # ---- process ----------------------------------------------------------------------------

    def start(self) -> None:
        config = self.base / "server.conf"
        plugins = self.plugins or sqlite_datastore(self.base)
        config.write_text(server_config(self.base, self.port, self.extra_server, plugins))
        env = dict(os.environ)
        env.pop("SPIFFE_ENDPOINT_SOCKET", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "plastron.server.cli.main", "run", "-config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=env,
            )
        wait_until_serving(self.process, self.socket_path, START_DEADLINE, self.log)

    def close_channels(self) -> None:
        """Close the channels opened so far (before their event loop ends)."""
        for channel in self.channels:
            channel.close()
        self.channels.clear()

    def stop(self) -> None:
        self.channels.clear()  # their event loops are gone; the process exit closes them
        stop_process(self.process)

    def log(self) -> str:
        return log_tail(self.log_path)

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line in /proc/<pid>/status")

    # ---- channels ---------------------------------------------------------------------------

    def local(self) -> Channel:
        channel = Channel(path=self.socket_path)
        self.channels.append(channel)
        return channel

    async def bundle(self) -> list[x509.Certificate]:
        resp = await bundle_grpc.BundleStub(self.local()).GetBundle(bundle_pb2.GetBundleRequest())
        return [x509.load_der_x509_certificate(a.asn1) for a in resp.x509_authorities]

    async def tls(self, identity: Identity | None = None) -> Channel:
        ctx = client_ssl_context(
            trust_bundle=await self.bundle(),
            client_chain=identity.chain if identity else None,
            client_key=identity.key if identity else None,
        )
        channel = open_channel(("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD))
        self.channels.append(channel)
        return channel

    # ---- callers ----------------------------------------------------------------------------

    async def join_token(self) -> str:
        stub = agent_grpc.AgentStub(self.local())
        resp = await stub.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=600))
        return str(resp.value)

    async def attest_agent(
        self,
        token: str | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        csr: bytes | None = None,
        channel: Channel | None = None,
    ) -> Identity:
        """Attest with a join token (a new one unless given); ``csr`` defaults to a plain one
        for ``key``; ``channel`` to a new TLS connection."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        token = token or await self.join_token()
        outcome = await self.attest("join_token", token.encode(), key, csr=csr, channel=channel)
        return outcome.identity

    async def attest(
        self,
        method: str,
        payload: bytes,
        key: ec.EllipticCurvePrivateKey,
        answer: Answer | None = None,
        csr: bytes | None = None,
        channel: Channel | None = None,
    ) -> AttestOutcome:
        """AttestAgent over TLS, answering each challenge with ``answer`` (a challenge without
        an ``answer`` fails the call); raises GRPCError with the server's refusal."""
        stub = agent_grpc.AgentStub(channel or await self.tls())
        challenges: list[bytes] = []
        params = agent_pb2.AttestAgentRequest.Params(
            data={"type": method, "payload": payload}, params={"csr": csr or make_csr(key)}
        )
        async with stub.AttestAgent.open(timeout=CALL_TIMEOUT) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            while True:
                resp = await stream.recv_message()
                if resp is None:
                    await stream.end()
                    await stream.recv_trailing_metadata()  # raises the server's status
                    raise AssertionError("AttestAgent ended without a result or an error")
                if resp.WhichOneof("step") == "result":
                    break
                challenges.append(resp.challenge)
                if answer is None:
                    raise AssertionError(f"{method}: unexpected challenge before a refusal")
                reply = await answer(resp.challenge)
                await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=reply))
            await stream.end()
        return AttestOutcome(_identity(resp.result.svid, key), challenges)

    async def ban(self, agent: SpiffeId) -> None:
        stub = agent_grpc.AgentStub(self.local())
        await stub.BanAgent(
            agent_pb2.BanAgentRequest(id={"trust_domain": TD.name, "path": agent.path})
        )

    async def mint(self, path: str) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(key, uris=(str(TD.spiffe_id(path)),))
        stub = svid_grpc.SVIDStub(self.local())
        resp = await stub.MintX509SVID(svid_pb2.MintX509SVIDRequest(csr=csr))
        return _identity(resp.svid, key)

    async def agent_ids(self) -> set[str]:
        resp = await agent_grpc.AgentStub(self.local()).ListAgents(agent_pb2.ListAgentsRequest())
        return {str(SpiffeId.from_parts(a.id.trust_domain, a.id.path)) for a in resp.agents}

    async def create_entries(self, *entries: types_entry.Entry) -> list[str]:
        """Create entries through the admin socket; their IDs, in order."""
        stub = entry_grpc.EntryStub(self.local())
        resp = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=entries))
        for result in resp.results:
            assert result.status.code == 0, result.status.message
        return [r.entry.id for r in resp.results]


def _identity(svid: object, key: ec.EllipticCurvePrivateKey) -> Identity:
    chain = [x509.load_der_x509_certificate(der) for der in svid.cert_chain]  # type: ignore[attr-defined]
    sid = svid.id  # type: ignore[attr-defined]
    return Identity(SpiffeId.from_parts(sid.trust_domain, sid.path), chain, key)


def short_base(prefix: str) -> Path:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def remove_base(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)
