"""A peer that makes the server answer (SETTINGS ACKs) and never reads is cut off once the
connection's unsent output passes ``GrpcLimits.max_unsent_bytes``; a legitimate client that reads
slowly still gets a multi-MiB response whole (plastron/transport/bounded.py). In process, over
TLS on TCP and over a Unix socket, with a raw HTTP/2 client."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from h2.settings import SettingCodes
from transport_pki import PkiCa

from plastron.proto.workload import workload_pb2
from plastron.transport.bounded import BoundedServer
from plastron.transport.limits import GrpcLimits, MiB
from plastron.transport.server import RunningServer, start_server
from plastron.transport.tls import server_ssl_context
from tests.raw_h2 import WORKLOAD_HEADER, RawH2Client, grpc_frame
from tests.unit.transport.test_transport_uds import TinyWorkloadApi

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # each one answered by a 9-byte ACK
# The most the flooder sends: the cap plus what kernel buffers on the way can hold, and more.
FLOOD_BYTES = 32 * MiB
FLOOD_WRITE = EMPTY_SETTINGS * (64 * 1024 // len(EMPTY_SETTINGS))
CAP = GrpcLimits().max_unsent_bytes
# Sampled between event-loop callbacks: one read (asyncio reads 256 KiB at a time) can add
# that much output at once before the check sees it.
CAP_SLACK = 512 * 1024
RESPONSE_BYTES = 4 * MiB  # the size of a large GetAuthorizedEntries answer


class SizedFetch(TinyWorkloadApi):
    """FetchJWTSVID answers with an SVID of ``int(audience[0])`` bytes."""

    async def FetchJWTSVID(self, stream: Any) -> None:
        request = await stream.recv_message()
        svid = workload_pb2.JWTSVID(
            spiffe_id="spiffe://example.org/w", svid="x" * int(request.audience[0])
        )
        await stream.send_message(workload_pb2.JWTSVIDResponse(svids=[svid]))


@dataclass
class Listener:
    running: RunningServer
    connect: Callable[[], RawH2Client]
    peer: str


@pytest.fixture(params=["tls", "uds"])
async def listener(
    request: pytest.FixtureRequest, ca: PkiCa, tmp_path: Path
) -> AsyncIterator[Listener]:
    if request.param == "tls":
        svid = ca.svid("/spire/server")
        ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
        async with await start_server([SizedFetch()], tcp=("127.0.0.1", 0), ssl=ctx) as running:
            assert running.tcp_address is not None
            port = running.tcp_address[1]
            yield Listener(running, lambda: _tls_client(port), "127.0.0.1")
    else:
        path = str(tmp_path / "api.sock")
        async with await start_server([SizedFetch()], uds_path=path) as running:
            yield Listener(running, lambda: _unix_client(path), f"uid {os.getuid()}")


def _tls_client(port: int) -> RawH2Client:
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    raw.settimeout(30)
    raw.connect(("127.0.0.1", port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return RawH2Client(ctx.wrap_socket(raw), authority=f"127.0.0.1:{port}")


def _unix_client(path: str) -> RawH2Client:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(path)
    return RawH2Client(sock)


def _record_protocols(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection protocol the servers make from now on."""
    made: list[Any] = []
    original = BoundedServer._protocol_factory

    def factory(self: BoundedServer) -> Any:
        protocol = original(self)
        made.append(protocol)
        return protocol

    monkeypatch.setattr(BoundedServer, "_protocol_factory", factory)
    return made


def _unsent(protocol: Any) -> int:
    """What one server connection holds to send: gathered by its writer, in its transport's
    buffer and, under TLS, in the socket transport's below it."""
    connection = getattr(protocol, "connection", None)  # set once the connection is made
    transport = getattr(connection, "_transport", None)  # grpclib drops it once closed
    if transport is None or transport.is_closing():
        return 0
    total = connection.writer.pending_bytes + transport.get_write_buffer_size()
    ssl_protocol = getattr(transport, "_ssl_protocol", None)
    if ssl_protocol is not None and ssl_protocol._transport is not None:
        total += ssl_protocol._transport.get_write_buffer_size()
    return int(total)


async def _sample_max(protocols: list[Any], done: asyncio.Future[Any]) -> int:
    """The most any connection held unsent, sampled each loop turn until ``done``."""
    peak = 0
    while not done.done():
        peak = max([peak, *(_unsent(p) for p in protocols)])
        await asyncio.sleep(0)
    return peak


def _flood(connect: Callable[[], RawH2Client], hold: threading.Event) -> tuple[int, bool]:
    """Empty SETTINGS frames as fast as the socket takes them, never reading; the connection
    is kept open until ``hold`` is set. The bytes sent, and whether a write failed (the server
    had cut the connection)."""
    client = connect()
    client.wait_settings()  # the preface exchange; from here on nothing is read
    sent = 0
    try:
        while sent < FLOOD_BYTES:
            client.sock.sendall(FLOOD_WRITE)
            sent += len(FLOOD_WRITE)
        hold.wait(60)
    except OSError:
        return sent, True
    finally:
        client.close()
    return sent, False


async def _until_cut(running: RunningServer, peer: str) -> None:
    """Until the server has admitted a connection of ``peer``, then let go of it (60 s at
    most: a deadline for the failure only)."""

    def open_count() -> int:
        return sum(s.peers.open_count(peer) for s in running.servers)  # type: ignore[attr-defined]

    seen = False
    for _ in range(6000):
        count = open_count()
        if seen and count == 0:
            return
        seen = seen or count > 0
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server still holds the connection of {peer}")


async def test_a_peer_that_never_reads_its_answers_is_cut_off(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    protocols = _record_protocols(monkeypatch)
    hold = threading.Event()
    flood = asyncio.ensure_future(asyncio.to_thread(_flood, listener.connect, hold))
    cut = asyncio.ensure_future(_until_cut(listener.running, listener.peer))
    try:
        peak = await _sample_max(protocols, cut)
        await cut  # the server aborted the connection while the flooder still held it
    finally:
        hold.set()
        await flood
    # It held no more than the cap (and one read's answers) on the way.
    assert peak <= CAP + CAP_SLACK, peak
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"closing the connection of {listener.peer}: "), warnings
    assert "bytes of output unsent" in warnings[0]


def _slow_read(connect: Callable[[], RawH2Client], size: int) -> tuple[int | None, bytes]:
    """One call for a ``size``-byte SVID with the receive windows wide open (the server is
    held back by the socket alone), read a few KiB at a time after a pause."""
    client = connect()
    client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.h2.increment_flow_control_window(2**31 - 1 - 65_535)
    client.wait_settings()
    call = client.open_call(FETCH_JWT_SVID, WORKLOAD_HEADER)
    request = workload_pb2.JWTSVIDRequest(audience=[str(size)]).SerializeToString()
    client.send(call, grpc_frame(request), end=True)
    time.sleep(0.5)  # not reading: the server fills the socket and pauses writing
    outcome = client.calls[call]
    while not outcome.closed and not client.connection_lost:
        client.receive(5.0)
        time.sleep(0.001)
    client.close()
    return outcome.grpc_status, outcome.data


async def test_a_slow_reader_gets_a_multi_mib_response_whole(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    protocols = _record_protocols(monkeypatch)
    call = asyncio.ensure_future(asyncio.to_thread(_slow_read, listener.connect, RESPONSE_BYTES))
    peak = await _sample_max(protocols, call)
    status, data = await call
    assert status == Status.OK.value
    reply = workload_pb2.JWTSVIDResponse.FromString(data[5:])
    assert reply.svids[0].svid == "x" * RESPONSE_BYTES
    # grpclib stops writing DATA once the transport pauses: well below the cap.
    assert peak < CAP // 2, peak
