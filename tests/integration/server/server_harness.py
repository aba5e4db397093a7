"""An in-process PlastronServer on SQLite with grpclib clients: local (admin socket) and
agent (TCP + mTLS with an agent SVID obtained through AttestAgent)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel

from plastron.clock import Clock
from plastron.plugins import Registries
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc
from plastron.proto.spire.api.server.svid.v1 import svid_grpc
from plastron.server.config import parse_server_config
from plastron.server.runtime import PlastronServer
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.processes import free_port

TD = TrustDomain("example.org")


MEMORY_KEY_MANAGER = 'KeyManager "memory" { plugin_data {} }'


def server_conf(
    tmp: Path,
    port: int,
    extra_server: str = "",
    extra_plugins: str = "",
    extra_top: str = "",
    key_manager: str = MEMORY_KEY_MANAGER,
    datastore: str = "sql",
) -> str:
    return f"""
server {{
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{tmp}/api.sock"
  data_dir = "{tmp}/data"
  log_level = "DEBUG"
  ca_ttl = "24h"
  {extra_server}
}}
plugins {{
  DataStore "{datastore}" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{tmp}/data/datastore.sqlite3"
    }}
  }}
  {key_manager}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  {extra_plugins}
}}
{extra_top}
"""


def make_csr(key: ec.EllipticCurvePrivateKey, uri: str | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")])
    )
    if uri:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class AgentIdentity:
    spiffe_id: SpiffeId
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey


@dataclass
class Harness:
    server: PlastronServer
    tmp: Path
    port: int
    channels: list[Channel] = field(default_factory=list)

    @property
    def socket_path(self) -> str:
        return str(self.server.config.socket_path)

    def local(self) -> Channel:
        ch = Channel(path=self.socket_path)
        self.channels.append(ch)
        return ch

    async def bundle(self) -> Bundle:
        ds = self.server.datastore
        assert ds is not None
        data = await ds.fetch_bundle(TD)
        assert data is not None
        return Bundle.from_json(data)

    async def tls(self, identity: AgentIdentity | None = None) -> Channel:
        bundle = await self.bundle()
        ctx = client_ssl_context(
            trust_bundle=bundle.x509_certificates(),
            client_chain=identity.chain if identity else None,
            client_key=identity.key if identity else None,
        )
        ch = open_channel(("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD))
        self.channels.append(ch)
        return ch

    async def join_token(self, ttl: int = 600, token: str = "") -> str:
        stub = agent_grpc.AgentStub(self.local())
        resp = await stub.CreateJoinToken(agent_pb2.CreateJoinTokenRequest(ttl=ttl, token=token))
        return str(resp.value)

    async def attest(self, token: str) -> AgentIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        stub = agent_grpc.AgentStub(await self.tls())
        async with stub.AttestAgent.open() as stream:
            await stream.send_message(attest_params("join_token", token.encode(), make_csr(key)))
            resp = await stream.recv_message()
            await stream.end()
        assert resp is not None and resp.WhichOneof("step") == "result", resp
        chain = [x509.load_der_x509_certificate(c) for c in resp.result.svid.cert_chain]
        sid = SpiffeId.from_parts(resp.result.svid.id.trust_domain, resp.result.svid.id.path)
        return AgentIdentity(sid, chain, key)

    def entry_stub(self, ch: Channel) -> Any:
        return entry_grpc.EntryStub(ch)

    def svid_stub(self, ch: Channel) -> Any:
        return svid_grpc.SVIDStub(ch)

    def bundle_stub(self, ch: Channel) -> Any:
        return bundle_grpc.BundleStub(ch)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


def attest_params(kind: str, payload: bytes, csr: bytes) -> agent_pb2.AttestAgentRequest:
    return agent_pb2.AttestAgentRequest(
        params=agent_pb2.AttestAgentRequest.Params(
            data={"type": kind, "payload": payload}, params={"csr": csr}
        )
    )


@contextlib.asynccontextmanager
async def running_server(
    tmp: Path,
    *,
    extra_server: str = "",
    extra_plugins: str = "",
    extra_top: str = "",
    key_manager: str = MEMORY_KEY_MANAGER,
    clock: Clock | None = None,
    registries: Registries | None = None,
    datastore: str = "sql",
) -> AsyncIterator[Harness]:
    """``registries`` and ``datastore``: plugins besides the server's own, and the name of the
    DataStore to use (its plugin_data is the sql store's)."""
    port = free_port()
    config = parse_server_config(
        server_conf(tmp, port, extra_server, extra_plugins, extra_top, key_manager, datastore)
    )
    server = PlastronServer(config, clock=clock, registries=registries)
    await server.start()
    harness = Harness(server, tmp, port)
    try:
        yield harness
    finally:
        harness.close()
        await server.stop()


_ = bundle_pb2
