"""The agent's client of the server API (TCP + TLS; the server must hold spiffe://<td>/spire/server).

The client observes one ``TlsIdentitySource`` (the agent's ``AgentIdentity``): one channel at a
time, rebuilt whenever the source publishes a new ``TlsIdentity`` (trust bundle, agent SVID).
Until the agent has an SVID the connection is TLS without a client certificate (AttestAgent,
GetBundle); with no trust bundle at all it is the insecure bootstrap, which still checks the
server's SPIFFE ID.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from grpclib.client import Channel
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from plastron.agent.cache import WorkloadEntry
from plastron.agent.wire import bundle_from_server, entry_from_proto
from plastron.attestors.base import MAX_ATTESTATION_MESSAGE, AgentNodeAttestor
from plastron.errors import AttestationFailed, InvalidSvid, Unavailable
from plastron.keymanager import PrivateKey
from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.proto.spire.api.server.agent.v1.agent_grpc import AgentStub
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.proto.spire.api.server.bundle.v1.bundle_grpc import BundleStub
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.entry.v1.entry_grpc import EntryStub
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.server.svid.v1.svid_grpc import SVIDStub
from plastron.proto.spire.api.types import attestation_pb2
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.spiffe.jwtsvid import JwtSvid, parse_jwt_svid_insecure
from plastron.transport.client import SpiffeChannel
from plastron.transport.keepalive import Keepalive
from plastron.transport.tls import client_ssl_context
from plastron.wire.svids import chain_from_proto

CALL_TIMEOUT = 30.0
#: The server could not be reached, or the connection died under a call (grpclib raises the
#: last two when a connection is lost mid-stream): retry later, never a reason to stop.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    StreamTerminatedError,
    ProtocolError,
)
MAX_SYNC_PAGES = 1000  # 500 entries a page: far above any realistic agent
MAX_CHALLENGE_ROUNDS = 32


@dataclass(frozen=True)
class TlsIdentity:
    """What the client connects with: the CAs it trusts (empty: insecure bootstrap) and the
    client certificate chain and key (None before the agent has an SVID)."""

    trust: tuple[x509.Certificate, ...]
    chain: tuple[x509.Certificate, ...] | None
    key: PrivateKey | None


class TlsIdentitySource(Protocol):
    def tls(self) -> TlsIdentity: ...


@dataclass(frozen=True)
class AttestAgentResult:
    chain: list[x509.Certificate]
    reattestable: bool


def insecure_bootstrap_context() -> ssl.SSLContext:
    """TLS that does not verify the chain; the server's SPIFFE ID is still checked (SPIRE)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerClient:
    def __init__(
        self,
        host: str,
        port: int,
        trust_domain: TrustDomain,
        keepalive: Keepalive | None = None,
    ) -> None:
        self._host, self._port, self.trust_domain = host, port, trust_domain
        # Probes the connection while a call is open, so the push stream on a half-open
        # connection ends (and is reopened) instead of waiting forever.
        self._keepalive = keepalive or Keepalive()
        self._source: TlsIdentitySource | None = None
        self._channel: Channel | None = None
        self._channel_identity: TlsIdentity | None = None

    def observe(self, source: TlsIdentitySource) -> None:
        """Connect with whatever identity ``source`` publishes from now on."""
        self._source = source
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._channel_identity = None

    def channel(self) -> Channel:
        identity = self._source.tls() if self._source else None
        # Identity, not equality: the source publishes a new object for every change, and
        # comparing keys (a PKCS#11 or TPM handle) by value is not meaningful.
        if self._channel is not None and identity is not self._channel_identity:
            self.close()
        if self._channel is None:
            if identity is not None and identity.trust:
                ctx = client_ssl_context(
                    trust_bundle=identity.trust,
                    client_chain=identity.chain,
                    client_key=identity.key if identity.chain else None,
                )
            else:
                ctx = insecure_bootstrap_context()
            self._channel = SpiffeChannel(
                self._host,
                self._port,
                ssl=ctx,
                expected_server_id=server_id(self.trust_domain),
                keepalive=self._keepalive,
            )
            self._channel_identity = identity
        return self._channel

    # ---- calls -------------------------------------------------------------------------------

    async def attest_agent(self, attestor: AgentNodeAttestor, csr: bytes) -> AttestAgentResult:
        """AttestAgent: params{data, csr}, any number of challenge rounds, then the result."""
        payload = await attestor.payload()
        params = agent_pb2.AttestAgentRequest.Params(
            data=attestation_pb2.AttestationData(type=attestor.name, payload=payload),
            params=agent_pb2.AgentX509SVIDParams(csr=csr),
        )
        stub = AgentStub(self.channel())
        async with stub.AttestAgent.open(timeout=CALL_TIMEOUT) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            for _ in range(MAX_CHALLENGE_ROUNDS + 1):
                response = await stream.recv_message()
                if response is None:
                    # The server's refusal comes in the trailers: raise it with its reason.
                    await stream.end()
                    await stream.recv_trailing_metadata()
                    raise AttestationFailed("attestation: server ended the stream without a result")
                step = response.WhichOneof("step")
                if step == "result":
                    await stream.end()
                    chain = chain_from_proto(response.result.svid)
                    return AttestAgentResult(chain, bool(response.result.reattestable))
                if step != "challenge" or len(response.challenge) > MAX_ATTESTATION_MESSAGE:
                    raise AttestationFailed(f"attestation: unexpected server message ({step})")
                answer = await attestor.answer(bytes(response.challenge))
                await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))
        raise AttestationFailed(f"attestation: more than {MAX_CHALLENGE_ROUNDS} challenge rounds")

    async def renew_agent(self, csr: bytes) -> list[x509.Certificate]:
        request = agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=csr))
        response = await AgentStub(self.channel()).RenewAgent(request, timeout=CALL_TIMEOUT)
        return chain_from_proto(response.svid)

    async def get_bundle(self) -> Bundle:
        msg = await BundleStub(self.channel()).GetBundle(
            bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT
        )
        bundle = bundle_from_server(msg)
        if bundle.trust_domain != self.trust_domain:
            raise InvalidSvid(f"server sent the bundle of {bundle.trust_domain} as ours")
        return bundle

    async def get_federated_bundle(self, td: TrustDomain) -> Bundle:
        msg = await BundleStub(self.channel()).GetFederatedBundle(
            bundle_pb2.GetFederatedBundleRequest(trust_domain=td.name), timeout=CALL_TIMEOUT
        )
        bundle = bundle_from_server(msg)
        if bundle.trust_domain != td:
            raise InvalidSvid(f"server sent the bundle of {bundle.trust_domain} for {td}")
        return bundle

    async def post_status(self, bundle_serial: int, version: str) -> None:
        request = agent_pb2.PostStatusRequest(
            current_bundle_serial=bundle_serial, agent_version=version
        )
        await AgentStub(self.channel()).PostStatus(request, timeout=CALL_TIMEOUT)

    async def authorized_entries(self, known: dict[str, WorkloadEntry]) -> list[WorkloadEntry]:
        """SyncAuthorizedEntries: whole set when small, else revisions then changed entries."""
        stub = EntryStub(self.channel())
        async with stub.SyncAuthorizedEntries.open(timeout=CALL_TIMEOUT) as stream:
            await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest())
            first: Any = await stream.recv_message()
            if first is None:
                raise ConnectionError("SyncAuthorizedEntries: stream ended without a response")
            if not first.entry_revisions:
                await stream.end()
                return [entry_from_proto(e) for e in first.entries]
            revisions = await self._read_pages(stream, first, "entry_revisions")
            kept = {
                r.id: known[r.id]
                for r in revisions
                if r.id in known and known[r.id].revision == r.revision_number
            }
            wanted = [r.id for r in revisions if r.id not in kept]
            if wanted:
                await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest(ids=wanted))
                page = await stream.recv_message()
                if page is None:
                    raise ConnectionError("SyncAuthorizedEntries: stream ended mid-sync")
                for e in await self._read_pages(stream, page, "entries"):
                    kept[e.id] = entry_from_proto(e)
            await stream.end()
            return list(kept.values())

    @staticmethod
    async def _read_pages(stream: Any, first: Any, field: str) -> list[Any]:
        items = list(getattr(first, field))
        page, pages = first, 1
        while page.more:
            pages += 1
            if pages > MAX_SYNC_PAGES:
                raise ConnectionError(f"SyncAuthorizedEntries: more than {MAX_SYNC_PAGES} pages")
            page = await stream.recv_message()
            if page is None:
                raise ConnectionError("SyncAuthorizedEntries: stream ended mid-page")
            items.extend(getattr(page, field))
        return items

    async def new_x509_svids(
        self, csrs: dict[str, bytes]
    ) -> dict[str, list[x509.Certificate] | str]:
        """BatchNewX509SVID: per entry id, the chain or the server's error message."""
        ids = list(csrs)
        request = svid_pb2.BatchNewX509SVIDRequest(
            params=[svid_pb2.NewX509SVIDParams(entry_id=i, csr=csrs[i]) for i in ids]
        )
        response = await SVIDStub(self.channel()).BatchNewX509SVID(request, timeout=CALL_TIMEOUT)
        if len(response.results) != len(ids):
            raise ConnectionError("BatchNewX509SVID: result count does not match the request")
        out: dict[str, list[x509.Certificate] | str] = {}
        for entry_id, result in zip(ids, response.results, strict=True):
            if result.status.code != 0:
                out[entry_id] = result.status.message or f"code {result.status.code}"
            else:
                out[entry_id] = chain_from_proto(result.svid)
        return out

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> JwtSvid:
        request = svid_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=list(audience))
        try:
            response = await SVIDStub(self.channel()).NewJWTSVID(request, timeout=CALL_TIMEOUT)
        except TRANSPORT_ERRORS as exc:  # the workload gets UNAVAILABLE, not an internal error
            raise Unavailable(f"cannot reach the server for a JWT-SVID: {exc!r}") from exc
        # Obtained over the authenticated channel from our server; parsed for its expiry.
        return parse_jwt_svid_insecure(response.svid.token)
