"""grpclib's server-side events, queues and buffers in lists: the same behaviour as asyncio's
and grpclib's own (waking, cancellation, order, partial reads), data still in deques, finished
calls dropped at once, and what a connection holding one open stream costs the server."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import tracemalloc
from collections import deque
from pathlib import Path
from typing import Any

import hpack
import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.config import Configuration
from grpclib.protocol import Buffer, Connection
from h2.connection import H2Connection
from transport_pki import PkiCa

from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.transport.bounded import BoundedServer
from plastron.transport.compact_streams import (
    CompactBuffer,
    CompactEvent,
    CompactQueue,
    compact_connection,
    compact_decoder_table,
)
from plastron.transport.peer import peer_info
from plastron.transport.server import start_server
from plastron.transport.tls import server_ssl_context

# ---- CompactEvent ---------------------------------------------------------------------------


async def test_an_event_wakes_every_waiter_and_a_cancelled_one_leaves() -> None:
    event = CompactEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[2].cancel()
    await asyncio.sleep(0)
    assert len(event._waiters) == 4  # the cancelled wait removed its own future
    event.set()
    done = await asyncio.gather(*waiters, return_exceptions=True)
    assert done[:2] == [True, True] and done[3:] == [True, True]
    assert isinstance(done[2], asyncio.CancelledError)
    assert not event._waiters and event.is_set()
    assert await event.wait()  # set: returns at once
    event.clear()
    late = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await late


def test_an_event_costs_a_fraction_of_asyncios() -> None:
    assert sys.getsizeof(CompactEvent()._waiters) < sys.getsizeof(asyncio.Event()._waiters) / 5


def test_a_connections_events_keep_their_state() -> None:
    connection = Connection(H2Connection(), asyncio.Transport(), config=Configuration())
    connection.write_ready.clear()
    compact_connection(connection)
    assert not connection.write_ready.is_set()
    connection = Connection(H2Connection(), asyncio.Transport(), config=Configuration())
    compact_connection(connection)  # grpclib starts it set: writing is not paused
    assert connection.write_ready.is_set() and not connection.stream_close_waiter.is_set()
    assert isinstance(connection.write_ready, CompactEvent)
    assert isinstance(connection.stream_close_waiter, CompactEvent)


# ---- CompactQueue ---------------------------------------------------------------------------


async def test_a_queue_keeps_order_through_every_size() -> None:
    queue = CompactQueue()
    assert queue.empty() and queue.qsize() == 0
    for batch in ([1], [2, 3], [4, 5, 6], [7], list(range(8, 20)), [20, 21]):
        for item in batch:
            queue.put_nowait(item)
        assert queue.qsize() == len(batch)
        assert [queue.get_nowait() for _ in batch] == batch
        assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_queue_wakes_its_getter_and_a_cancelled_get_loses_nothing() -> None:
    queue = CompactQueue()
    cancelled = asyncio.create_task(queue.get())
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    queue.put_nowait("a")
    assert await getter == "a"
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    queue.put_nowait("b")
    assert await queue.get() == "b" and not queue._getters


def test_a_queue_holds_many_items_in_a_deque() -> None:
    # One item per DATA frame a peer sends: popping them must stay O(1) each (a list's pop(0)
    # would make draining many small frames quadratic).
    queue = CompactQueue()
    queue.put_nowait(0)
    assert isinstance(queue._queue, tuple)  # a few items: no deque
    for i in range(1, 50_000):
        queue.put_nowait(i)
    assert isinstance(queue._queue, deque)
    assert [queue.get_nowait() for _ in range(50_000)] == list(range(50_000))
    assert queue._queue == ()  # drained: the deque is gone


# ---- the HPACK decoder's table -------------------------------------------------------------


def test_the_decoder_table_in_a_list_decodes_as_hpacks_own() -> None:
    connection = H2Connection()
    compact_decoder_table(connection)
    plain, encoder = hpack.Decoder(), hpack.Encoder()
    rng = random.Random(5)
    for i in range(400):
        if i == 200:
            encoder.header_table_size = 300  # a size update: entries evicted from the end
        headers = [(f"x-h{rng.randrange(60)}", "v" * rng.randrange(200)) for _ in range(4)]
        block = encoder.encode(headers)
        assert connection.decoder.decode(block) == plain.decode(block) == headers
        ours = connection.decoder.header_table.dynamic_entries
        assert list(ours) == list(plain.header_table.dynamic_entries)
    assert not isinstance(ours, deque)


# ---- CompactBuffer --------------------------------------------------------------------------


async def _reads(buffer: Buffer, chunks: list[bytes], sizes: list[int]) -> list[bytes]:
    for chunk in chunks:
        buffer.add(chunk, len(chunk))
    buffer.eof()
    return [await buffer.read(size) for size in sizes]


async def test_a_buffer_reads_what_grpclibs_reads_and_acknowledges_the_same() -> None:
    chunks = [b"abcde", b"f", b"ghijklmnop", b"q" * 70_000]
    sizes = [0, 3, 4, 8, 1, 70_000, 5]  # the last one: after the end, b""
    acks: dict[str, list[int]] = {"grpclib": [], "compact": []}
    want = await _reads(Buffer(acks["grpclib"].append), chunks, sizes)
    compact = CompactBuffer(acks["compact"].append)
    got = await _reads(compact, chunks, sizes)
    assert got == want and acks["compact"] == acks["grpclib"]
    assert compact._acked == ()  # nothing left over: no deque kept


async def test_a_buffer_keeps_a_partly_read_chunk_for_the_next_read() -> None:
    buffer = CompactBuffer(lambda n: None)
    buffer.add(b"0123456789", 10)
    assert await buffer.read(4) == b"0123"
    assert isinstance(buffer._acked, deque) and buffer.unacked_size() == 0
    assert await buffer.read(6) == b"456789"
    assert buffer._acked == ()


# ---- the server: finished calls and a connection's cost -------------------------------------


class _HeldWatches(health_grpc.HealthBase):
    """Check answers; Watch stays open (as an agent's EntryNotifier/Watch does) until released."""

    def __init__(self) -> None:
        self.open = 0
        self.release = asyncio.Event()

    async def Check(self, stream: Any) -> None:
        await stream.recv_message()
        peer_info(stream)
        await stream.send_message(
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        )

    async def List(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(health_pb2.HealthListResponse())

    async def Watch(self, stream: Any) -> None:
        await stream.recv_message()
        peer_info(stream)  # the caller identified, as the server's handlers do
        self.open += 1
        try:
            await self.release.wait()
        finally:
            self.open -= 1


# A client in its own process (everything this process allocates is the server's): N mTLS
# connections, each making one Check call and then holding a Watch stream open.
_CLIENT = """
import asyncio, ssl, sys
from grpclib.client import Channel
from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
async def main(port, cafile, certfile, keyfile, n):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.load_cert_chain(certfile, keyfile)
    ctx.set_alpn_protocols(["h2"])
    streams, channels = [], []
    for _ in range(n):
        channels.append(Channel("127.0.0.1", port, ssl=ctx))
        stub = health_grpc.HealthStub(channels[-1])
        await stub.Check(health_pb2.HealthCheckRequest())
        stream = stub.Watch.open()
        await stream.__aenter__()
        await stream.send_message(health_pb2.HealthCheckRequest(), end=True)
        streams.append(stream)
    print("up", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for channel in channels:
        channel.close()
asyncio.run(main(int(sys.argv[1]), *sys.argv[2:5], int(sys.argv[5])))
"""

CONNECTIONS = 40
# Measured 25 KiB here; 42 KiB with grpclib's, h2's and asyncio's own containers, grpclib's
# handler and asyncio's kept peercert dict (30 KiB with only the stream's own, 27.5 KiB with
# only grpclib's handler; each of the others is 0.7-1.4 KiB, pinned by its own test).
SERVER_BYTES_PER_STREAM_CONNECTION = 27 * 1024


def _client_files(ca: PkiCa, tmp_path: Path) -> list[str]:
    svid = ca.svid("/spire/agent/x/1")
    files = {
        "ca.pem": ca.cert.public_bytes(serialization.Encoding.PEM),
        "cert.pem": svid.chain[0].public_bytes(serialization.Encoding.PEM),
        "key.pem": svid.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [str(tmp_path / name) for name in files]


async def _held(port: int, files: list[str], count: int, service: _HeldWatches) -> Any:
    expected = service.open + count
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        str(port),
        *files,
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None
    assert await asyncio.wait_for(client.stdout.readline(), 60) == b"up\n"
    for _ in range(300):
        if service.open == expected:
            break
        await asyncio.sleep(0.05)
    assert service.open == expected
    return client


async def test_a_connection_holding_a_stream_costs_the_server_under_27_kib(
    ca: PkiCa, tmp_path: Path
) -> None:
    svid = ca.svid("/spire/server")
    server_ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    service = _HeldWatches()
    running = await start_server([service], tcp=("127.0.0.1", 0), ssl=server_ctx)
    assert running.tcp_address is not None
    port, files = running.tcp_address[1], _client_files(ca, tmp_path)
    clients = [await _held(port, files, 1, service)]  # warm-up: what all share
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        clients.append(await _held(port, files, CONNECTIONS, service))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        server = running.servers[0]
        assert isinstance(server, BoundedServer)
        kept_calls = max(len(h._tasks) for h in server._handlers)
    finally:
        tracemalloc.stop()
        service.release.set()
        for client in clients:
            assert client.stdin is not None
            client.stdin.close()
            await client.wait()
        await running.close()
    assert grown / CONNECTIONS < SERVER_BYTES_PER_STREAM_CONNECTION
    assert kept_calls == 1  # the open Watch: each finished Check is gone, not kept for 9 more
