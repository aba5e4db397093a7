"""Bounded gRPC on a real ``plastron-agent run`` process's Workload API socket, attacked by an
unprivileged local user (uid 65534 when the tests run as root) with a raw HTTP/2 client
(issue #12 item 2)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status

from tests.integration.agent.agent_processes import AgentProcess, ServerProcess
from tests.raw_h2 import WORKLOAD_HEADER, RawH2Client, connected_as, declared_prefix, rss_bytes

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
GiB = 1 << 30
MiB = 1 << 20
PUSH_BUDGET = 64 * MiB
MAX_RSS_GROWTH = 10 * MiB
NOBODY = 65534


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    base = Path(tempfile.mkdtemp(prefix="pgla-", dir="/tmp"))
    base.chmod(0o755)  # another local user must reach the agent's socket below it
    server = ServerProcess(base)
    server.start()
    agent = AgentProcess(base, server)
    try:
        agent.start(server.join_token("spiffe://example.org/limits-node"))
        yield agent
    finally:
        agent.stop()
        server.stop()
        log = (base / "agent.log").read_text(errors="replace")
        shutil.rmtree(base, ignore_errors=True)
    assert "Traceback" not in log, log


@contextlib.contextmanager
def unprivileged_connection(path: str) -> Iterator[socket.socket]:
    """Connected by uid 65534 when we can switch users; else by us (still no entry's caller)."""
    if os.geteuid() == 0:
        with connected_as(NOBODY, path) as conn:
            yield conn
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            yield conn


def _pid(agent: AgentProcess) -> int:
    assert agent.proc is not None and agent.proc.process is not None
    return agent.proc.process.pid


def test_declared_1gib_workload_api_request_is_refused(agent: AgentProcess) -> None:
    with unprivileged_connection(agent.socket_path) as conn:  # warm the same paths first
        client = RawH2Client.over(conn)
        call = client.open_call(FETCH_JWT_SVID, WORKLOAD_HEADER)
        client.push_declared_message(call, declared=1024, budget=1024)
    before = rss_bytes(_pid(agent))
    with unprivileged_connection(agent.socket_path) as conn:
        client = RawH2Client.over(conn)
        call = client.open_call(FETCH_JWT_SVID, WORKLOAD_HEADER)
        outcome = client.push_declared_message(call, declared=GiB, budget=PUSH_BUDGET)
    growth = rss_bytes(_pid(agent)) - before
    print(f"agent RSS growth for a declared 1 GiB message: {growth / MiB:.2f} MiB")
    assert outcome.grpc_status == Status.RESOURCE_EXHAUSTED.value, outcome
    assert f"({GiB} vs. {80 * 1024} bytes) for {FETCH_JWT_SVID}" in outcome.grpc_message
    assert outcome.bytes_sent < 1 * MiB
    assert growth < MAX_RSS_GROWTH
    assert agent.cli("healthcheck").returncode == 0


def test_workload_api_requests_are_small(agent: AgentProcess) -> None:
    with unprivileged_connection(agent.socket_path) as conn:
        client = RawH2Client.over(conn)
        call = client.open_call(FETCH_JWT_SVID, WORKLOAD_HEADER)
        client.send(call, declared_prefix(80 * 1024 + 1))
        outcome = client.wait_closed(call)
    assert outcome.grpc_status == Status.RESOURCE_EXHAUSTED.value, outcome
    assert f"({80 * 1024 + 1} vs. {80 * 1024} bytes)" in outcome.grpc_message
