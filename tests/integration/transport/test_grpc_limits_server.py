"""Bounded gRPC on a real ``plastron-server run`` process, attacked with a raw HTTP/2 client
over its TCP port without a client certificate (issue #12 item 2).

Each test fails on a server that buffers whatever message length is declared, waits forever
for a first message, or takes any number of streams and connections.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from grpclib.const import Status
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.transport.client import open_channel
from plastron.transport.tls import client_ssl_context
from tests.integration.agent.agent_processes import TD, ServerProcess
from tests.processes import poll
from tests.raw_h2 import RawH2Client, declared_prefix, grpc_frame, rss_bytes

GET_BUNDLE = "/spire.api.server.bundle.v1.Bundle/GetBundle"
ATTEST_AGENT = "/spire.api.server.agent.v1.Agent/AttestAgent"
GiB = 1 << 30
MiB = 1 << 20
# A server that buffers what is declared takes all of it; one that refuses takes one window.
PUSH_BUDGET = 64 * MiB
MAX_RSS_GROWTH = 10 * MiB
STREAM_CAP = 3


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pgl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[ServerProcess]:
    (base / "s").mkdir()
    proc = ServerProcess(
        base / "s",
        server_extra=f"""grpc_limits {{
    max_concurrent_streams = {STREAM_CAP}
    first_message_timeout = "1s"
  }}""",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    log = proc.proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log  # every refusal above is a status, not a crash


def _pid(server: ServerProcess) -> int:
    assert server.proc.process is not None
    return server.proc.process.pid


def _good_get_bundle(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        call = client.open_call(GET_BUNDLE)
        client.send(call, grpc_frame(bundle_pb2.GetBundleRequest().SerializeToString()), end=True)
        outcome = client.wait_closed(call)
        assert outcome.grpc_status == Status.OK.value, outcome
        assert outcome.data  # the bundle
    finally:
        client.close()


def test_declared_1gib_message_is_refused_before_its_body(server: ServerProcess) -> None:
    _good_get_bundle(server)  # warm: TLS, HTTP/2 and the handler paths are in memory
    before = rss_bytes(_pid(server))
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        call = client.open_call(GET_BUNDLE)
        outcome = client.push_declared_message(call, declared=GiB, budget=PUSH_BUDGET)
    finally:
        client.close()
    growth = rss_bytes(_pid(server)) - before
    print(f"server RSS growth for a declared 1 GiB message: {growth / MiB:.2f} MiB")
    assert outcome.grpc_status == Status.RESOURCE_EXHAUSTED.value, outcome
    assert f"({GiB} vs. {4 * MiB} bytes)" in outcome.grpc_message
    assert GET_BUNDLE in outcome.grpc_message
    assert outcome.bytes_sent < 1 * MiB  # it stopped acknowledging: no body was read
    assert growth < MAX_RSS_GROWTH
    _good_get_bundle(server)


def test_attest_agent_rounds_are_limited_to_small_messages(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        attest = client.open_call(ATTEST_AGENT)
        client.send(attest, declared_prefix(100 * 1024))
        refused = client.wait_closed(attest)
        # The same length on a 4 MiB method is read and decoded (zeros are no GetBundleRequest).
        bundle = client.open_call(GET_BUNDLE)
        client.send_flow_controlled(bundle, grpc_frame(b"\0" * (100 * 1024)), end=True)
        decoded = client.wait_closed(bundle)
    finally:
        client.close()
    assert refused.grpc_status == Status.RESOURCE_EXHAUSTED.value, refused
    assert f"({100 * 1024} vs. {80 * 1024} bytes) for {ATTEST_AGENT}" in refused.grpc_message
    assert decoded.grpc_status == Status.INVALID_ARGUMENT.value, decoded
    assert decoded.grpc_message.startswith("request is not a valid message"), decoded


def test_a_call_without_a_first_message_is_ended(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        silent = client.open_call(GET_BUNDLE)  # headers, then nothing
        outcome = client.wait_closed(silent)
        partial = client.open_call(GET_BUNDLE)  # a prefix, then not the body it promised
        client.send(partial, declared_prefix(10))
        partial_outcome = client.wait_closed(partial)
    finally:
        client.close()
    for result in (outcome, partial_outcome):
        assert result.grpc_status == Status.DEADLINE_EXCEEDED.value, result
        assert "no complete request message within 1s" in result.grpc_message
    _good_get_bundle(server)


def test_streams_per_connection_are_capped_from_the_first_frame(server: ServerProcess) -> None:
    client = RawH2Client.tls("127.0.0.1", server.port)
    try:
        # All opened before reading the server's SETTINGS: only the server can enforce the cap.
        calls = [client.open_call(GET_BUNDLE) for _ in range(STREAM_CAP + 1)]
        extra = client.wait_closed(calls[-1])
        assert client.server_settings[SettingCodes.MAX_CONCURRENT_STREAMS] == STREAM_CAP
        assert extra.reset_code == ErrorCodes.REFUSED_STREAM, extra
        assert extra.grpc_status is None  # never handled
        for call in calls[:-1]:  # the others are handled (and end for want of a message)
            outcome = client.wait_closed(call)
            assert outcome.grpc_status == Status.DEADLINE_EXCEEDED.value, outcome
        assert client.goaway is None and not client.connection_lost
    finally:
        client.close()


async def test_a_well_behaved_client_queues_within_the_stream_cap(server: ServerProcess) -> None:
    """grpclib's client honours SETTINGS_MAX_CONCURRENT_STREAMS: 10 calls, 3 at a time."""
    bundle = x509.load_pem_x509_certificates(server.cli("bundle", "show").stdout.encode())
    ctx = client_ssl_context(trust_bundle=bundle)
    channel = open_channel(
        ("127.0.0.1", server.port), ssl=ctx, expected_server_id=server_id(TrustDomain(TD))
    )
    try:
        stub = bundle_grpc.BundleStub(channel)
        await stub.GetBundle(bundle_pb2.GetBundleRequest(), timeout=30)  # connected: SETTINGS in
        results = await asyncio.gather(
            *(stub.GetBundle(bundle_pb2.GetBundleRequest(), timeout=30) for _ in range(10))
        )
    finally:
        channel.close()
    assert all(r.trust_domain == "example.org" for r in results)


def test_connections_per_peer_are_capped(base: Path) -> None:
    (base / "c").mkdir()
    server = ServerProcess(base / "c", server_extra="grpc_limits { max_connections_per_peer = 2 }")
    server.start()
    clients: list[RawH2Client] = []
    try:
        for _ in range(2):
            clients.append(RawH2Client.tls("127.0.0.1", server.port))
            clients[-1].wait_settings()
        extra = RawH2Client.tls("127.0.0.1", server.port)
        clients.append(extra)
        poll("third connection refused", lambda: extra.receive(0.5) and extra.goaway)
        assert extra.goaway is not None
        assert extra.goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert extra.goaway.additional_data == b"too many connections from this peer"
        clients[0].close()  # one slot frees up
        clients.remove(clients[0])

        def admitted() -> bool:
            probe = RawH2Client.tls("127.0.0.1", server.port)
            clients.append(probe)
            probe.wait_settings()
            while probe.receive(0.2):
                pass
            return probe.goaway is None and not probe.connection_lost

        poll("a connection admitted again", admitted)
        assert "refusing connections from 127.0.0.1: 2 open" in server.proc.log()
    finally:
        for client in clients:
            client.close()
        server.stop()
