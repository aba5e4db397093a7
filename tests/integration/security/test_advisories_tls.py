"""SPIRE advisory class: TLS session resumption across a changed trust bundle (SPIRE 1.14.3).

SPIRE's server resumed TLS sessions from tickets without re-running its chain check against the
current bundle, so a client certificate kept authenticating after its CA left the bundle.
Plastron issues no tickets, but Python's ``ssl`` cannot turn off OpenSSL's server-side TLS 1.2
session-ID cache: the server does resume a session a client offers. What holds instead is that
a resumed session never carries an identity (``plastron/transport/peer.py``).

The test, against a real server process: an admin SVID from a CA appended to the bundle
authenticates on a full TLS 1.2 handshake; the CA is then removed from the bundle (as a
revocation would); a full handshake with that SVID is refused; and the old session, offered
again, must not authenticate: the call is refused, whether or not the session was resumed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from plastron.clock import SystemClock
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.spiffe.bundle import Bundle, x509_authority_id
from plastron.spiffe.ids import server_id
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context

from .server_process import TD, ServerProcess, remove_base, short_base

ADMIN = TD.spiffe_id("/ops/admin")
DEADLINE = 60.0
POLL_INTERVAL = 0.1
HANDSHAKE_REFUSED = "handshake refused"


class SessionOfferingTls:
    """A TLS 1.2 client context that offers ``session`` on its next connections and keeps the
    SSL object of the last one (asyncio's SSL transport takes no session of its own)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3: no tickets, no resumption
        self.context = context
        self.session: ssl.SSLSession | None = None
        self.last: ssl.SSLObject | None = None
        wrap_bio = context.wrap_bio

        def wrap_with_session(*args: Any, **kwargs: Any) -> ssl.SSLObject:
            kwargs["session"] = self.session
            self.last = wrap_bio(*args, **kwargs)
            return self.last

        context.wrap_bio = wrap_with_session  # type: ignore[method-assign]


async def admin_call(server: ServerProcess, tls: SessionOfferingTls) -> str:
    """CountAgents on a new connection: "OK", the refusal's status name, or HANDSHAKE_REFUSED."""
    channel = open_channel(
        ("127.0.0.1", server.port), ssl=tls.context, expected_server_id=server_id(TD)
    )
    try:
        await agent_grpc.AgentStub(channel).CountAgents(agent_pb2.CountAgentsRequest(), timeout=10)
        return "OK"
    except GRPCError as exc:
        return exc.status.name
    except (ssl.SSLError, ConnectionError, StreamTerminatedError):
        return HANDSHAKE_REFUSED
    finally:
        channel.close()


async def poll_until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """The server re-reads its bundle on a timer: wait for ``check`` with a deadline."""
    end = asyncio.get_running_loop().time() + DEADLINE
    while asyncio.get_running_loop().time() < end:
        if await check():
            return
        await asyncio.sleep(POLL_INTERVAL)  # polling interval, not a readiness guess
    raise AssertionError(f"{what}: not within {DEADLINE:g}s")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    base = short_base("pl-tls-")
    proc = ServerProcess(base, extra_server=f'admin_ids = ["{ADMIN}"]')
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        remove_base(base)


@pytest.fixture
async def close_channels(server: ServerProcess) -> AsyncIterator[None]:
    yield
    server.close_channels()


async def remove_x509_authority(server: ServerProcess, root: x509.Certificate) -> None:
    """Take ``root`` out of the trust domain's bundle in the server's datastore, as another
    server of the deployment (or an operator's revocation) would."""
    config = SqlConfig(connection_string=str(server.base / "data" / "ds.sqlite3"))
    datastore = await open_datastore(config, clock=SystemClock())

    def without_root(data: bytes | None) -> bytes:
        assert data is not None
        return Bundle.from_json(data).without_x509_authority(x509_authority_id(root)).to_json()

    try:
        await datastore.update_bundle(TD, without_root)
    finally:
        await datastore.close()


@pytest.mark.usefixtures("close_channels")
async def test_advisory_tls_resumption_after_bundle_change(server: ServerProcess) -> None:
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_ca_certificate(
        trust_domain=TD,
        public_key=root_key.public_key(),
        issuer=None,
        issuer_key=root_key,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(hours=1),
    )
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_svid = make_x509_svid(
        spiffe_id=ADMIN,
        public_key=admin_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(minutes=30),
    )
    server_roots = await server.bundle()
    await bundle_grpc.BundleStub(server.local()).AppendBundle(
        bundle_pb2.AppendBundleRequest(x509_authorities=[{"asn1": root.public_bytes(Encoding.DER)}])
    )
    tls = SessionOfferingTls(
        client_ssl_context(
            trust_bundle=server_roots, client_chain=[admin_svid], client_key=admin_key
        )
    )

    async def authenticates() -> bool:
        return await admin_call(server, tls) == "OK"

    await poll_until("the appended CA authenticates the admin", authenticates)
    assert tls.last is not None and tls.last.version() == "TLSv1.2"
    old_session = tls.last.session
    assert old_session is not None

    await remove_x509_authority(server, root)

    async def refused_on_full_handshake() -> bool:
        return await admin_call(server, tls) != "OK"

    await poll_until("the removed CA no longer authenticates", refused_on_full_handshake)
    assert tls.last is not None and not tls.last.session_reused

    tls.session = old_session
    outcome = await admin_call(server, tls)
    resumed = tls.last is not None and tls.last.session_reused
    assert outcome in (Status.PERMISSION_DENIED.name, HANDSHAKE_REFUSED), (outcome, resumed)
    if resumed:  # the resumed session reached the server: it carried no identity
        assert outcome == Status.PERMISSION_DENIED.name
