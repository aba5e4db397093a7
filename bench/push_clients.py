"""Light agents for the propagation benchmarks (imported by bench/propagation.py and
bench/ha_lag.py): each attests with a join token over TLS like a real agent, then holds one
``EntryNotifier/Watch`` stream on its own mTLS connection and records when each push arrives.
They run no sync loop and no Workload API: what they stand for is the server's side of 1,000
connected agents (1,000 connections, 1,000 streams, the change fan-out), not 1,000 agents' CPU.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierStub
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

TD = TrustDomain("example.org")
TIMEOUT = 60.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def entry_message(spiffe_path: str, parent: SpiffeId, selector: str) -> types_entry.Entry:
    kind, _, value = selector.partition(":")
    return types_entry.Entry(
        spiffe_id={"trust_domain": TD.name, "path": spiffe_path},
        parent_id={"trust_domain": parent.trust_domain.name, "path": parent.path},
        selectors=[{"type": kind, "value": value}],
    )


@dataclass
class ServerEndpoint:
    """One server reached as an operator (admin socket) and as agents (TCP + TLS)."""

    socket_path: str
    port: int
    _trust: list[x509.Certificate] = field(default_factory=list)

    def local(self) -> Channel:
        return Channel(path=self.socket_path)

    async def trust(self) -> list[x509.Certificate]:
        if not self._trust:
            channel = self.local()
            try:
                resp = await bundle_grpc.BundleStub(channel).GetBundle(
                    bundle_pb2.GetBundleRequest()
                )
            finally:
                channel.close()
            self._trust = [x509.load_der_x509_certificate(a.asn1) for a in resp.x509_authorities]
        return self._trust

    async def tls(self, chain: list[x509.Certificate] | None, key: Any = None) -> Channel:
        ctx = client_ssl_context(
            trust_bundle=await self.trust(), client_chain=chain, client_key=key
        )
        return open_channel(("127.0.0.1", self.port), ssl=ctx, expected_server_id=server_id(TD))

    async def create_entry(self, channel: Channel, message: types_entry.Entry) -> str:
        stub = entry_grpc.EntryStub(channel)
        resp = await stub.BatchCreateEntry(
            entry_pb2.BatchCreateEntryRequest(entries=[message]), timeout=TIMEOUT
        )
        result = resp.results[0]
        if result.status.code != 0:
            raise RuntimeError(f"entry create refused: {result.status.message}")
        return str(result.entry.id)

    async def attest(
        self, token: str = ""
    ) -> tuple[SpiffeId, list[x509.Certificate], ec.EllipticCurvePrivateKey]:
        """A new agent: a join token (``token``, or a random one) from the admin socket,
        AttestAgent over TLS."""
        local = self.local()
        try:
            issued = await agent_grpc.AgentStub(local).CreateJoinToken(
                agent_pb2.CreateJoinTokenRequest(ttl=600, token=token), timeout=TIMEOUT
            )
        finally:
            local.close()
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        params = agent_pb2.AttestAgentRequest.Params(
            data={"type": "join_token", "payload": issued.value.encode()}, params={"csr": csr}
        )
        channel = await self.tls(None)
        try:
            stub = agent_grpc.AgentStub(channel)
            async with stub.AttestAgent.open(timeout=TIMEOUT) as stream:
                await stream.send_message(agent_pb2.AttestAgentRequest(params=params), end=True)
                resp = await stream.recv_message()
                await stream.recv_trailing_metadata()
        finally:
            channel.close()
        assert resp is not None
        svid = resp.result.svid
        chain = [x509.load_der_x509_certificate(der) for der in svid.cert_chain]
        return SpiffeId.from_parts(svid.id.trust_domain, svid.id.path), chain, key


@dataclass
class LightAgent:
    """An attested agent holding one Watch stream; ``pushes`` are arrival times."""

    spiffe_id: SpiffeId
    channel: Channel
    pushes: list[float] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ended: Exception | None = None

    async def watch(self) -> None:
        stub = EntryNotifierStub(self.channel)
        try:
            async with stub.Watch.open() as stream:
                await stream.send_message(entrynotifier_pb2.WatchRequest(), end=True)
                await stream.recv_message()  # the first message: the stream is up
                self.ready.set()
                while await stream.recv_message() is not None:
                    self.pushes.append(time.perf_counter())
                    self.arrived.set()
        except (GRPCError, StreamTerminatedError) as exc:
            self.ended = exc  # a closing server; a run waiting on this agent times out

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.channel.close()


async def light_agents(
    server: ServerEndpoint, count: int, batch: int = 50, tokens: list[str] | None = None
) -> list[LightAgent]:
    """``count`` attested agents, each with its Watch stream up; agent ``i`` attests with
    join token ``tokens[i]`` if given (a fleet agent's ID), a random one otherwise."""
    names = tokens if tokens is not None else [""] * count
    agents: list[LightAgent] = []
    for start in range(0, count, batch):
        made = await asyncio.gather(*(server.attest(t) for t in names[start : start + batch]))
        for sid, chain, key in made:
            agent = LightAgent(sid, await server.tls(chain, key))
            agent.task = asyncio.create_task(agent.watch())
            agents.append(agent)
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in agents)), TIMEOUT)
    return agents
