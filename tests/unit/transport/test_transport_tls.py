"""Real TLS over real sockets: grpclib server with CERT_OPTIONAL, SPIFFE-ID checked clients."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpclib.protocol
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.exceptions import StreamTerminatedError
from transport_pki import PkiCa, Svid, make_ca

from plastron.errors import FailedPrecondition, InvalidArgument, InvalidSvid
from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.spiffe.ids import SpiffeId
from plastron.transport.client import connect, open_channel
from plastron.transport.peer import PeerInfo, peer_info
from plastron.transport.server import RunningServer, start_server
from plastron.transport.tls import (
    PeerIdentityError,
    RotatingServerTls,
    client_ssl_context,
    server_ssl_context,
    spiffe_id_of,
)

SERVER_ID = SpiffeId.parse("spiffe://example.org/spire/server")


class RecordingHealth(health_grpc.HealthBase):
    """Answers SERVING and remembers who asked."""

    def __init__(self) -> None:
        self.callers: list[PeerInfo] = []

    async def Check(self, stream: Any) -> None:
        await stream.recv_message()
        self.callers.append(peer_info(stream))
        await stream.send_message(
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        )

    async def List(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(health_pb2.HealthListResponse())

    async def Watch(self, stream: Any) -> None:
        await stream.recv_message()


@pytest.fixture
async def tls_server(ca: PkiCa) -> AsyncIterator[tuple[RunningServer, RecordingHealth, Svid]]:
    svid = ca.svid("/spire/server")
    health = RecordingHealth()
    ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    running = await start_server([health], tcp=("127.0.0.1", 0), ssl=ctx)
    try:
        yield running, health, svid
    finally:
        await running.close()


async def _check(
    address: tuple[str, int] | None, ctx: ssl.SSLContext, expected: Any = SERVER_ID
) -> int:
    assert address is not None
    channel = open_channel(address, ssl=ctx, expected_server_id=expected)
    try:
        reply = await health_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return int(reply.status)
    finally:
        channel.close()


async def test_client_without_certificate_is_accepted(ca: PkiCa, tls_server: Any) -> None:
    running, health, _ = tls_server
    ctx = client_ssl_context(trust_bundle=[ca.cert])
    assert await _check(running.tcp_address, ctx) == health_pb2.HealthCheckResponse.SERVING
    caller = health.callers[-1]
    assert caller.local is False
    assert caller.certificate is None and caller.spiffe_id is None
    assert caller.address is not None and caller.address[0] == "127.0.0.1"


async def test_client_svid_is_exposed_to_the_handler(ca: PkiCa, tls_server: Any) -> None:
    running, health, _ = tls_server
    agent = ca.svid("/spire/agent/join_token/abc")
    ctx = client_ssl_context(trust_bundle=[ca.cert], client_chain=agent.chain, client_key=agent.key)
    await _check(running.tcp_address, ctx)
    caller = health.callers[-1]
    assert caller.spiffe_id == SpiffeId.parse("spiffe://example.org/spire/agent/join_token/abc")
    assert caller.certificate is not None
    assert caller.certificate.serial_number == agent.chain[0].serial_number


async def test_client_certificate_from_another_ca_is_rejected(
    ca: PkiCa, other_ca: PkiCa, tls_server: Any
) -> None:
    running, health, _ = tls_server
    foreign = other_ca.svid("/spire/agent/x")
    ctx = client_ssl_context(
        trust_bundle=[ca.cert], client_chain=foreign.chain, client_key=foreign.key
    )
    with pytest.raises((ssl.SSLError, ConnectionError, StreamTerminatedError, OSError)):
        await _check(running.tcp_address, ctx)
    assert health.callers == []


async def test_client_refuses_server_with_wrong_spiffe_id(ca: PkiCa) -> None:
    impostor = ca.svid("/workload/web")  # valid chain, wrong identity
    health = RecordingHealth()
    ctx = server_ssl_context(impostor.chain, impostor.key, lambda: [ca.cert])
    async with await start_server([health], tcp=("127.0.0.1", 0), ssl=ctx) as running:
        client = client_ssl_context(trust_bundle=[ca.cert])
        with pytest.raises(PeerIdentityError, match="/workload/web"):
            await _check(running.tcp_address, client)
        assert running.tcp_address is not None
        channel = open_channel(running.tcp_address, ssl=client, expected_server_id=SERVER_ID)
        with pytest.raises(PeerIdentityError):
            await connect(channel)
        channel.close()
        # A predicate works too, and accepts the same server when it says so.
        ok = await _check(running.tcp_address, client, lambda sid: sid.path == "/workload/web")
        assert ok == health_pb2.HealthCheckResponse.SERVING
    assert len(health.callers) == 1  # only the accepted call reached the server


async def test_client_refuses_server_from_untrusted_ca(other_ca: PkiCa, ca: PkiCa) -> None:
    svid = other_ca.svid("/spire/server", uri="spiffe://example.org/spire/server")
    ctx = server_ssl_context(svid.chain, svid.key, lambda: [other_ca.cert])
    async with await start_server([RecordingHealth()], tcp=("127.0.0.1", 0), ssl=ctx) as running:
        with pytest.raises(ssl.SSLCertVerificationError):
            await _check(running.tcp_address, client_ssl_context(trust_bundle=[ca.cert]))


async def test_rotation_of_svid_and_bundle_without_restart(ca: PkiCa) -> None:
    new_ca = make_ca()
    first = ca.svid("/spire/server")
    bundle = [ca.cert]
    tls = RotatingServerTls(first.chain, first.key, lambda: list(bundle))
    health = RecordingHealth()
    async with await start_server([health], tcp=("127.0.0.1", 0), ssl=tls.context()) as running:
        addr = running.tcp_address
        old_agent = ca.svid("/spire/agent/a")
        new_agent = new_ca.svid("/spire/agent/b")
        old_client = client_ssl_context(
            trust_bundle=[ca.cert], client_chain=old_agent.chain, client_key=old_agent.key
        )
        await _check(addr, old_client)
        # The server moves to an SVID from the new CA and trusts only the new CA.
        second = new_ca.svid("/spire/server")
        tls.set_svid(second.chain, second.key)
        bundle[:] = [new_ca.cert]
        new_client = client_ssl_context(
            trust_bundle=[new_ca.cert], client_chain=new_agent.chain, client_key=new_agent.key
        )
        await _check(addr, new_client)
        assert health.callers[-1].spiffe_id == SpiffeId.parse("spiffe://example.org/spire/agent/b")
        with pytest.raises(ssl.SSLCertVerificationError):  # old server SVID no longer served
            await _check(addr, client_ssl_context(trust_bundle=[ca.cert]))
        both = client_ssl_context(
            trust_bundle=[ca.cert, new_ca.cert],
            client_chain=old_agent.chain,
            client_key=old_agent.key,
        )
        with pytest.raises((ssl.SSLError, ConnectionError, StreamTerminatedError, OSError)):
            await _check(addr, both)  # old agent's CA was dropped from the bundle
    assert len(health.callers) == 2


async def _raw_tls_server(ctx: ssl.SSLContext, seen: list[Any]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # grpclib's own Peer over the real transport, as a server Stream carries it.
        stream = type("S", (), {"peer": grpclib.protocol.Peer(writer.transport)})()  # type: ignore[arg-type]
        seen.append(peer_info(stream))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


async def test_no_session_tickets_and_resumed_sessions_carry_no_identity(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    assert ctx.options & ssl.OP_NO_TICKET
    assert ctx.num_tickets == 0
    seen: list[PeerInfo] = []
    server = await _raw_tls_server(ctx, seen)
    port = server.sockets[0].getsockname()[1]
    agent = ca.svid("/spire/agent/a")

    def two_connections(max_version: ssl.TLSVersion) -> tuple[bool, bool]:
        cctx = client_ssl_context(
            trust_bundle=[ca.cert], client_chain=agent.chain, client_key=agent.key
        )
        cctx.maximum_version = max_version
        with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as first:
            first.recv(2)
            session = first.session
        assert session is not None
        with cctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), session=session
        ) as second:
            second.recv(2)
            return session.has_ticket, bool(second.session_reused)

    try:
        had_ticket, reused = await asyncio.to_thread(two_connections, ssl.TLSVersion.TLSv1_3)
        assert (had_ticket, reused) == (False, False)
        assert seen[-1].spiffe_id is not None
        had_ticket, reused = await asyncio.to_thread(two_connections, ssl.TLSVersion.TLSv1_2)
        assert had_ticket is False
        if reused:  # Python's ssl can't disable the TLS 1.2 session-ID cache: ignore its cert
            assert seen[-1].tls_resumed and seen[-1].spiffe_id is None
        assert seen[-2].spiffe_id == SpiffeId.parse("spiffe://example.org/spire/agent/a")
    finally:
        server.close()
        await server.wait_closed()


class _SealedKey(ec.EllipticCurvePrivateKey):
    """Behaves like an HSM key: signs, but will not export."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner

    def exchange(self, algorithm: Any, peer_public_key: Any) -> bytes:
        raise NotImplementedError

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def sign(self, data: bytes | bytearray | memoryview, signature_algorithm: Any) -> bytes:
        return self._inner.sign(data, signature_algorithm)

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        raise NotImplementedError("key is not extractable")

    def __copy__(self) -> _SealedKey:
        return self

    def __deepcopy__(self, memo: Any) -> _SealedKey:
        return self


def test_non_exportable_key_is_refused_with_a_clear_error(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    with pytest.raises(FailedPrecondition, match="not exportable") as info:
        server_ssl_context(svid.chain, _SealedKey(svid.key), lambda: [ca.cert])
    assert "BEGIN" not in str(info.value)


def test_context_argument_checks(ca: PkiCa) -> None:
    svid = ca.svid("/x")
    with pytest.raises(InvalidArgument, match="empty"):
        client_ssl_context(trust_bundle=[])
    with pytest.raises(InvalidArgument, match="together"):
        client_ssl_context(trust_bundle=[ca.cert], client_chain=svid.chain)
    with pytest.raises(InvalidSvid, match="empty"):
        server_ssl_context([], svid.key, lambda: [ca.cert])
    with pytest.raises(InvalidArgument, match="limit"):
        client_ssl_context(trust_bundle=[ca.cert] * 2000)


def test_spiffe_id_of_requires_exactly_one_uri_san(ca: PkiCa) -> None:
    assert spiffe_id_of(ca.svid("/w").chain[0]) == SpiffeId.parse("spiffe://example.org/w")
    two = ca.svid("/w", extra_uri="spiffe://example.org/v").chain[0]
    with pytest.raises(InvalidSvid, match="exactly one URI SAN"):
        spiffe_id_of(two)
    bad = ca.svid("/w", uri="https://example.org/w").chain[0]
    with pytest.raises(InvalidArgument):
        spiffe_id_of(bad)


def test_key_file_fallback_leaves_nothing_on_disk(
    ca: PkiCa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without memfd the key goes through a private temp dir that is gone afterwards."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    svid = ca.svid("/spire/server")
    ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    assert isinstance(ctx, ssl.SSLContext)
    assert list(tmp_path.iterdir()) == []


async def test_bundle_source_failure_keeps_last_context(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    healthy = {"ok": True}

    def flaky() -> list[Any]:
        if not healthy["ok"]:
            raise RuntimeError("datastore down")
        return [ca.cert]

    tls = RotatingServerTls(svid.chain, svid.key, flaky)
    healthy["ok"] = False
    async with await start_server(
        [RecordingHealth()], tcp=("127.0.0.1", 0), ssl=tls.context()
    ) as running:
        ctx = client_ssl_context(trust_bundle=[ca.cert])
        assert await _check(running.tcp_address, ctx) == health_pb2.HealthCheckResponse.SERVING
