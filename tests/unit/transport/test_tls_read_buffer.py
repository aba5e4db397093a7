"""TLS connections sharing one read buffer: what each costs the server, and that bytes read
into the shared buffer reach the right connection intact."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from test_transport_tls import RecordingHealth
from transport_pki import PkiCa

from plastron.transport.bounded import BoundedServer
from plastron.transport.server import RunningServer, start_server
from plastron.transport.tls import client_ssl_context, server_ssl_context
from plastron.transport.tls_read_buffer import (
    WRITE_PIECE_BYTES,
    WRITE_PIECES,
    SharedReadBufferSSLProtocol,
)

CONNECTIONS = 40
# About 17 KiB here (HTTP/2 and grpclib state, the SSL objects' Python side). asyncio's own
# SSLProtocol adds a 256 KiB read buffer per connection, h2's settings in deques 8 KiB.
SERVER_BYTES_PER_CONNECTION = 21 * 1024

# A client in its own process, so that everything this process allocates is the server's: it
# opens N TLS connections, prints "up" and holds them until its stdin closes.
_CLIENT = """
import asyncio, ssl, sys
async def main(port, cafile, n):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    loop = asyncio.get_running_loop()
    held = [await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=ctx)
            for _ in range(n)]
    print("up", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


async def _connections_held(
    running: RunningServer, cafile: Path, count: int
) -> asyncio.subprocess.Process:
    assert running.tcp_address is not None
    server = running.servers[0]
    assert isinstance(server, BoundedServer)
    peers = server.peers
    expected = peers.open_count("127.0.0.1") + count
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        str(running.tcp_address[1]),
        str(cafile),
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None
    assert await asyncio.wait_for(client.stdout.readline(), 30) == b"up\n"
    # Each connection is admitted (the HTTP/2 side set up) once the server's handshake is done.
    for _ in range(300):
        if peers.open_count("127.0.0.1") == expected:
            break
        await asyncio.sleep(0.05)
    assert peers.open_count("127.0.0.1") == expected
    return client


async def test_an_idle_tls_connection_costs_the_server_under_21_kib(
    ca: PkiCa, tmp_path: Path
) -> None:
    svid = ca.svid("/spire/server")
    server_ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    running = await start_server([RecordingHealth()], tcp=("127.0.0.1", 0), ssl=server_ctx)
    clients = [await _connections_held(running, cafile, 1)]  # warm-up: what all share
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients.append(await _connections_held(running, cafile, CONNECTIONS))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        for client in clients:
            assert client.stdin is not None
            client.stdin.close()
            await client.wait()
        await running.close()
    assert grown / CONNECTIONS < SERVER_BYTES_PER_CONNECTION


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _echo_round_trip(port: int, ctx: ssl.SSLContext, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_connections_reading_at_once_each_get_their_own_bytes(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    server_ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    client_ctx = client_ssl_context(trust_bundle=[ca.cert])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SharedReadBufferSSLProtocol(loop, _Echo(), server_ctx), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    # Larger than one read (256 KiB), distinct per connection, all in flight together.
    payloads = [bytes([i]) * 700_000 + os.urandom(1000) for i in range(8)]
    try:
        echoed = await asyncio.wait_for(
            asyncio.gather(*(_echo_round_trip(port, client_ctx, p) for p in payloads)), 30
        )
    finally:
        server.close()
        await server.wait_closed()
    assert echoed == payloads


async def test_a_connection_keeps_its_peer_certificate_only_in_der_and_no_deque(
    ca: PkiCa, tmp_path: Path
) -> None:
    svid = ca.svid("/spire/server")
    client_svid = ca.svid("/spire/agent/x/1")
    server_ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    client_ctx = client_ssl_context(
        trust_bundle=[ca.cert], client_chain=client_svid.chain, client_key=client_svid.key
    )
    loop = asyncio.get_running_loop()
    echoes: list[_Echo] = []

    def protocol() -> SharedReadBufferSSLProtocol:
        echoes.append(_Echo())
        return SharedReadBufferSSLProtocol(loop, echoes[-1], server_ctx)

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        assert await _echo_round_trip(port, client_ctx, b"x") == b"x"
    finally:
        server.close()
        await server.wait_closed()
    transport = echoes[0].transport
    # asyncio's own would keep getpeercert()'s dict here (about 2 KiB per connection), and its
    # echo went through a write backlog in a deque (a 760-byte block per connection).
    assert transport.get_extra_info("peercert") is None
    assert transport._ssl_protocol._write_backlog == []
    ssl_object = transport.get_extra_info("ssl_object")
    assert ssl_object.getpeercert(binary_form=True) == client_svid.chain[0].public_bytes(
        serialization.Encoding.DER
    )


class _RecordedWrites:
    """An SSLObject that records how much plaintext each write hands it."""

    def __init__(self, sslobj: ssl.SSLObject) -> None:
        self._sslobj = sslobj
        self.sizes: list[int] = []

    def write(self, data: bytes) -> int:
        self.sizes.append(len(data))
        return self._sslobj.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sslobj, name)


class _Sender(asyncio.Protocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload  # written as two writes: its first 62,000 bytes, then the rest
        self.recorded: _RecordedWrites | None = None
        self.socket_writes: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        protocol = transport._ssl_protocol  # type: ignore[attr-defined]
        self.recorded = protocol._sslobj = _RecordedWrites(protocol._sslobj)
        sock, self.socket_writes = protocol._transport, []
        write = sock.write
        sock.write = lambda data: (self.socket_writes.append(len(data)), write(data))
        transport.write(self.payload[:62_000])
        transport.write(self.payload[62_000:])
        transport.write(b"end")


async def test_a_large_write_is_encrypted_in_pieces_and_sent_in_one(ca: PkiCa) -> None:
    # OpenSSL's outgoing memory BIO keeps the largest size it held: a 12 KiB response
    # encrypted whole left each connection holding 16 KiB after it.
    svid = ca.svid("/spire/server")
    server_ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    payload = os.urandom(12_000) + b"x" * 50_000  # under 64 KiB: 4 KiB pieces
    huge = os.urandom(1 << 20)  # over it: 16 pieces
    sender = _Sender(payload + huge)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SharedReadBufferSSLProtocol(loop, sender, server_ctx), "127.0.0.1", 0
    )
    try:
        port = server.sockets[0].getsockname()[1]
        ctx = client_ssl_context(trust_bundle=[ca.cert])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        got = await asyncio.wait_for(reader.readexactly(len(payload) + len(huge) + 3), 30)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert got == payload + huge + b"end"
    assert sender.recorded is not None
    sizes = sender.recorded.sizes
    assert sum(sizes) == len(payload) + len(huge) + 3
    assert max(sizes[:-17]) <= WRITE_PIECE_BYTES  # the first write's pieces
    assert sizes[-17:] == [(1 << 20) // WRITE_PIECES] * WRITE_PIECES + [3]
    # The ciphertext of each write still goes to the socket in one write, as asyncio's does.
    assert len(sender.socket_writes) == 3 and sender.socket_writes[2] < 100
