"""How often a peer may PING a real ``plastron-server run`` (plastron/transport/keepalive.py):
a PING loop is cut off with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" after at most
``max_strikes + 1`` answers; PINGs at a keepalive's pace, or after the server sent data, are
answered for good."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from h2.errors import ErrorCodes

from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.transport.limits import PingLimits
from tests.integration.agent.agent_processes import ServerProcess
from tests.processes import poll
from tests.raw_h2 import RawH2Client, grpc_frame

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
FLOOD = 10_000
LIMITS = PingLimits()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    base = Path(tempfile.mkdtemp(prefix="ppl-", dir="/tmp"))
    proc = ServerProcess(base)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.proc.log_path.read_text(errors="replace")
        shutil.rmtree(base, ignore_errors=True)
        assert "Traceback" not in log, log


def drain(client: RawH2Client) -> None:
    while client.receive(0.2):
        pass


def test_a_ping_loop_is_cut_off_after_a_bounded_number_of_answers(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        client.wait_settings()
        for _ in range(FLOOD // 100):  # the loop: as fast as the socket takes them
            if client.goaway is not None or client.connection_lost:
                break
            try:
                client.ping(100)
            except OSError:  # the server has closed the connection
                break
            client.receive(0.0001)
        poll(
            "too_many_pings", lambda: client.receive(0.5) or client.goaway or client.connection_lost
        )
        drain(client)
        assert client.goaway is not None
        assert client.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert client.goaway.additional_data == b"too_many_pings"
        # The read that went over the limit is not answered at all: at most the PINGs before
        # it (the first one and the forgiven strikes) are.
        assert client.ping_acks <= LIMITS.max_strikes + 1, client.ping_acks
    finally:
        client.close()
    # Other connections are served as before.
    _get_bundle(RawH2Client.tls("127.0.0.1", server.port))


def test_pings_at_a_keepalive_pace_are_answered_for_good(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        client.wait_settings()
        rounds = LIMITS.max_strikes + 3
        for _ in range(rounds):
            client.ping()
            deadline = time.monotonic() + LIMITS.min_interval * 1.5  # a pace above the floor
            while time.monotonic() < deadline:
                client.receive(0.05)
        drain(client)
        assert client.goaway is None and not client.connection_lost
        assert client.ping_acks == rounds
    finally:
        client.close()


def test_pings_after_the_server_sent_data_are_never_struck(server: ServerProcess) -> None:
    """grpc-go and grpc core probe bandwidth with a PING after data comes in."""
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        client.wait_settings()
        rounds = LIMITS.max_strikes + 3
        for _ in range(rounds):
            _call_get_bundle(client)
            client.ping()
        drain(client)
        assert client.goaway is None and not client.connection_lost
        assert client.ping_acks == rounds
    finally:
        client.close()


def _call_get_bundle(client: RawH2Client) -> None:
    call = client.open_call(GET_BUNDLE)
    client.send(call, grpc_frame(bundle_pb2.GetBundleRequest().SerializeToString()), end=True)
    outcome = client.wait_closed(call)
    assert outcome.grpc_status == Status.OK.value, outcome


def _get_bundle(client: RawH2Client) -> None:
    try:
        client.wait_settings()
        _call_get_bundle(client)
    finally:
        client.close()
