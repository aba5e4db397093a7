"""BoundedServer's framing checks, in process over a Unix socket with a raw HTTP/2 client: every
malformed request is a status with a message, never grpclib's traceback and UNKNOWN."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from grpclib.const import Status
from h2.settings import SettingCodes

from plastron.proto.workload import workload_pb2
from plastron.transport.bounded import PeerConnections
from plastron.transport.limits import ConnectionLimits, GrpcLimits, Keepalive, MessageLimits
from plastron.transport.server import RunningServer, start_server
from tests.raw_h2 import CallOutcome, RawH2Client, declared_prefix, grpc_frame
from tests.unit.transport.test_transport_uds import TinyWorkloadApi

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
HEADER = ("workload.spiffe.io", "true")
T = TypeVar("T")

LIMITS = GrpcLimits(
    connections=ConnectionLimits(max_concurrent_streams=7),
    messages=MessageLimits(default=1024, per_method={FETCH_JWT_SVID: 4096}),
)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with await start_server(
        [TinyWorkloadApi()], uds_path=str(tmp_path / "api.sock"), limits=LIMITS
    ) as server:
        yield server


async def _in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def _call(path: str, body: bytes, *, end: bool = True) -> CallOutcome:
    client = RawH2Client.unix(path)
    try:
        call = client.open_call(FETCH_JWT_SVID, HEADER)
        client.send_flow_controlled(call, body, end=end)
        return client.wait_closed(call)
    finally:
        client.close()


def _sock(running: RunningServer) -> str:
    assert running.uds_path is not None
    return running.uds_path


async def test_a_message_within_the_method_limit_is_served(running: RunningServer) -> None:
    request = workload_pb2.JWTSVIDRequest(audience=["x" * 3000]).SerializeToString()
    outcome = await _in_thread(lambda: _call(_sock(running), grpc_frame(request)))
    assert outcome.grpc_status == Status.OK.value, outcome


async def test_the_method_limit_applies_to_the_declared_length(running: RunningServer) -> None:
    outcome = await _in_thread(lambda: _call(_sock(running), declared_prefix(4097), end=False))
    assert outcome.grpc_status == Status.RESOURCE_EXHAUSTED.value
    assert outcome.grpc_message == (
        f"received message larger than max (4097 vs. 4096 bytes) for {FETCH_JWT_SVID}"
    )


async def test_compressed_message_is_unimplemented(
    running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    frame = grpc_frame(b"\x1f\x8b", compressed=True)
    with caplog.at_level(logging.DEBUG):
        outcome = await _in_thread(lambda: _call(_sock(running), frame))
    assert outcome.grpc_status == Status.UNIMPLEMENTED.value
    assert "compressed messages are not supported" in outcome.grpc_message
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (declared_prefix(100) + b"\0" * 10, "a 100-byte message"),
        (b"\0\0", "a message prefix"),
    ],
)
async def test_a_stream_ending_inside_a_message_is_invalid_argument(
    running: RunningServer, caplog: pytest.LogCaptureFixture, body: bytes, what: str
) -> None:
    with caplog.at_level(logging.DEBUG):
        outcome = await _in_thread(lambda: _call(_sock(running), body))
    assert outcome.grpc_status == Status.INVALID_ARGUMENT.value, outcome
    assert f"the request stream ended inside {what}" in outcome.grpc_message
    assert not [r for r in caplog.records if r.exc_info]


async def test_settings_advertise_the_stream_cap_and_small_windows(
    running: RunningServer,
) -> None:
    def settings() -> dict[int, int]:
        client = RawH2Client.unix(_sock(running))
        try:
            return client.wait_settings()
        finally:
            client.close()

    advertised = await _in_thread(settings)
    assert advertised[SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert advertised[SettingCodes.INITIAL_WINDOW_SIZE] == 65_535


def test_peer_connections_count_each_peer_on_its_own() -> None:
    peers = PeerConnections(cap=2)
    assert peers.admit("10.0.0.1") and peers.admit("10.0.0.1")
    assert not peers.admit("10.0.0.1")
    assert peers.admit("10.0.0.2")
    peers.release("10.0.0.1")
    assert peers.open_count("10.0.0.1") == 1
    assert peers.admit("10.0.0.1")
    for _ in range(2):
        peers.release("10.0.0.1")
    assert peers.open_count("10.0.0.1") == 0


async def test_a_peer_that_stops_answering_is_dropped_and_one_that_answers_is_kept(
    tmp_path: Path,
) -> None:
    """The server's keepalive: a silent connection is PINGed; no answer, no connection."""
    limits = GrpcLimits(keepalive=Keepalive(time=1.0, timeout=0.5, without_calls=True))
    path = str(tmp_path / "ka.sock")
    async with await start_server([TinyWorkloadApi()], uds_path=path, limits=limits):
        silent, live = RawH2Client.unix(path), RawH2Client.unix(path)
        try:
            await _in_thread(silent.wait_settings)
            await _in_thread(live.wait_settings)
            await _in_thread(lambda: _until_dropped(silent, live))
            assert not live.connection_lost and live.goaway is None
            assert live.pings_received >= 1  # it was probed too, and answered
        finally:
            silent.close()
            live.close()


def _until_dropped(silent: RawH2Client, live: RawH2Client) -> None:
    """Keep ``live`` answering until the server closes ``silent``, whose bytes are read off
    the socket but never given to h2 (so nothing is answered)."""
    silent.sock.settimeout(0.05)
    for _ in range(600):  # 30 s of 50 ms reads: a generous deadline
        live.receive(0.05)
        try:
            if silent.sock.recv(65536) == b"":
                return
        except TimeoutError:
            pass
    raise AssertionError("the silent connection was not dropped")
