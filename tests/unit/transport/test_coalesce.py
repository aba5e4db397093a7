"""CoalescingWriter: a server connection's HTTP/2 output reaches its socket once per event-loop
turn, in the order it was written, and large output still goes out as it is produced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.config import Configuration
from h2.config import H2Configuration
from h2.connection import H2Connection

from plastron.proto.workload import workload_grpc, workload_pb2
from plastron.transport.coalesce import FLUSH_BYTES, CoalescedConnection, CoalescingWriter
from plastron.transport.server import RunningServer, start_server
from tests.unit.transport.test_transport_uds import TinyWorkloadApi

METADATA = {"workload.spiffe.io": "true"}


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


async def _next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_reach_the_transport_as_one_in_order() -> None:
    transport = FakeTransport()
    writer = CoalescingWriter(transport)  # type: ignore[arg-type]
    for piece in (b"headers", b"", b"data", b"trailers"):
        writer.write(piece)
    assert transport.writes == []
    await _next_turn()
    assert transport.writes == [b"headersdatatrailers"]
    writer.write(b"next")
    await _next_turn()
    assert transport.writes == [b"headersdatatrailers", b"next"]


async def test_output_past_the_flush_size_is_written_at_once() -> None:
    transport = FakeTransport()
    writer = CoalescingWriter(transport, flush_bytes=10)  # type: ignore[arg-type]
    writer.write(b"12345")
    writer.write(b"67890")
    assert transport.writes == [b"1234567890"]
    assert writer.pending_bytes == 0
    writer.write(b"x")
    await _next_turn()
    assert transport.writes == [b"1234567890", b"x"]


async def test_flush_writes_what_was_gathered_now() -> None:
    transport = FakeTransport()
    writer = CoalescingWriter(transport)  # type: ignore[arg-type]
    writer.write(b"goaway")
    writer.flush()
    assert transport.writes == [b"goaway"]
    await _next_turn()  # the scheduled flush finds nothing left
    assert transport.writes == [b"goaway"]


class BigFetch(TinyWorkloadApi):
    """FetchJWTSVID answers with an SVID of ``len(audience[0])`` bytes."""

    async def FetchJWTSVID(self, stream: Any) -> None:
        request = await stream.recv_message()
        svid = workload_pb2.JWTSVID(spiffe_id="spiffe://example.org/w", svid=request.audience[0])
        await stream.send_message(workload_pb2.JWTSVIDResponse(svids=[svid]))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with await start_server([BigFetch()], uds_path=str(tmp_path / "api.sock")) as server:
        yield server


def _count_server_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the writes the server's end of a Unix socket connection hands to its socket."""
    sizes: list[int] = []
    cls: Any = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    original = cls.write

    def write(self: Any, data: Any) -> None:
        if self.get_extra_info("sockname"):  # the accepted end (the client's is unnamed)
            sizes.append(len(data))
        original(self, data)

    monkeypatch.setattr(cls, "write", write)
    return sizes


async def _fetch(stub: workload_grpc.SpiffeWorkloadAPIStub, text: str) -> str:
    reply = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=[text]), metadata=METADATA)
    return str(reply.svids[0].svid)


async def test_a_unary_response_is_one_socket_write(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert running.uds_path is not None
    channel = Channel(path=running.uds_path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
        assert await _fetch(stub, "first") == "first"  # connection set up, settings exchanged
        writes = _count_server_writes(monkeypatch)
        for n in range(5):
            assert await _fetch(stub, f"call {n}") == f"call {n}"
        # Headers, message and trailers (and the request's WINDOW_UPDATE) of each call:
        # grpclib wrote them one by one, three or four writes per call.
        assert len(writes) == 5, writes
    finally:
        channel.close()


async def test_concurrent_calls_and_large_responses_arrive_intact(
    running: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many calls on one connection at once (HPACK blocks must stay in h2's order) and
    responses larger than the flush size (written as they are produced, not held)."""
    assert running.uds_path is not None
    channel = Channel(path=running.uds_path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
        texts = [f"{n}:" + "x" * (n * 997) for n in range(40)]
        assert await asyncio.gather(*(_fetch(stub, t) for t in texts)) == texts
        writes = _count_server_writes(monkeypatch)
        big = "y" * (3 * FLUSH_BYTES)
        assert await _fetch(stub, big) == big
        assert max(writes) <= FLUSH_BYTES + 16 * 1024 + 64  # one more DATA frame at most
        assert sum(writes) > len(big)
    finally:
        channel.close()


async def test_the_connection_s_own_frames_stay_behind_what_its_streams_wrote() -> None:
    """A PING answer (or SETTINGS ACK, WINDOW_UPDATE) h2 queued after a stream's frames goes
    through the same writer, after them: never ahead of them on the wire."""
    transport = FakeTransport()
    h2_conn = H2Connection(H2Configuration(client_side=False))
    connection = CoalescedConnection(h2_conn, transport, config=Configuration())  # type: ignore[arg-type]
    connection.writer.write(b"stream frames")  # as a stream hands them over
    h2_conn.ping(b"12345678")
    connection.flush()
    assert transport.writes == []
    connection.close()  # what was gathered goes out before the transport closes
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"stream frames")
    assert transport.writes[0].endswith(b"12345678")
