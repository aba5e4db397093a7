"""The agent's client of the server API (TCP + TLS; the server must hold spiffe://<td>/spire/server).

One channel at a time, rebuilt when the trust bundle or the agent SVID changes. Until the agent
has an SVID the connection is TLS without a client certificate (AttestAgent, GetBundle).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from grpclib.client import Channel
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from plastron.agent.cache import WorkloadEntry
from plastron.agent.wire import bundle_from_proto, chain_from_proto, entry_from_proto
from plastron.errors import InvalidSvid, Unavailable
from plastron.keymanager import PrivateKey
from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.proto.spire.api.server.agent.v1.agent_grpc import AgentStub
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.proto.spire.api.server.bundle.v1.bundle_grpc import BundleStub
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.entry.v1.entry_grpc import EntryStub
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.server.svid.v1.svid_grpc import SVIDStub
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.spiffe.jwtsvid import JwtSvid, parse_jwt_svid_insecure
from plastron.transport.client import SpiffeChannel
from plastron.transport.tls import client_ssl_context

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


def insecure_bootstrap_context() -> ssl.SSLContext:
    """TLS that does not verify the chain; the server's SPIFFE ID is still checked (SPIRE)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerClient:
    def __init__(self, host: str, port: int, trust_domain: TrustDomain) -> None:
        self._host, self._port, self.trust_domain = host, port, trust_domain
        self._trust: tuple[x509.Certificate, ...] = ()
        self._identity: tuple[tuple[x509.Certificate, ...], PrivateKey] | None = None
        self._channel: Channel | None = None

    def set_trust(self, authorities: Sequence[x509.Certificate]) -> None:
        if tuple(authorities) != self._trust:
            self._trust = tuple(authorities)
            self.close()

    def set_identity(
        self, chain: Sequence[x509.Certificate] | None, key: PrivateKey | None
    ) -> None:
        new = None if chain is None or key is None else (tuple(chain), key)
        if new != self._identity:
            self._identity = new
            self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def channel(self) -> Channel:
        if self._channel is None:
            if self._trust:
                chain, key = self._identity or (None, None)
                ctx = client_ssl_context(
                    trust_bundle=self._trust, client_chain=chain, client_key=key
                )
            else:
                ctx = insecure_bootstrap_context()
            self._channel = SpiffeChannel(
                self._host, self._port, ssl=ctx, expected_server_id=server_id(self.trust_domain)
            )
        return self._channel

    # ---- calls -------------------------------------------------------------------------------

    async def renew_agent(self, csr: bytes) -> list[x509.Certificate]:
        request = agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=csr))
        response = await AgentStub(self.channel()).RenewAgent(request, timeout=CALL_TIMEOUT)
        return chain_from_proto(response.svid)

    async def get_bundle(self) -> Bundle:
        msg = await BundleStub(self.channel()).GetBundle(
            bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT
        )
        bundle = bundle_from_proto(msg)
        if bundle.trust_domain != self.trust_domain:
            raise InvalidSvid(f"server sent the bundle of {bundle.trust_domain} as ours")
        return bundle

    async def get_federated_bundle(self, td: TrustDomain) -> Bundle:
        msg = await BundleStub(self.channel()).GetFederatedBundle(
            bundle_pb2.GetFederatedBundleRequest(trust_domain=td.name), timeout=CALL_TIMEOUT
        )
        bundle = bundle_from_proto(msg)
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
