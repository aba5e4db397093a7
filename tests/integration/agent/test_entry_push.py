"""The server's entry push, end to end: real server and agent processes and a workload.

The agents here sync every hour, so an entry created on the server that reaches the workload
within the test's deadline can only have come through the push (the agent's initial sync ran
before the entry existed). An agent with the push turned off (polling only, as a SPIRE agent)
still gets its entries at its sync interval."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll

from tests.processes import free_port

NODE = f"spiffe://{TD}/node"
FIRST = f"spiffe://{TD}/first"
PUSHED = f"spiffe://{TD}/pushed"
AFTER_RESUME = f"spiffe://{TD}/after-resume"
KEEPALIVE_GAVE_UP = "keepalive PING unanswered"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pep-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(base: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(base)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def fetched_ids(agent: AgentProcess) -> set[str]:
    """The SPIFFE IDs the workload (this test's uid) gets from the agent now."""
    out = agent.cli("api", "fetch", "x509")
    if out.returncode != 0:
        return set()
    return {
        line.split("\t")[-1] for line in out.stdout.splitlines() if line.startswith("SPIFFE ID")
    }


def started_agent(base: Path, server: ServerProcess, experimental: str = "") -> AgentProcess:
    agent = AgentProcess(base, server, sync_interval="1h", experimental_extra=experimental)
    server.create_entry(NODE, FIRST, agent.uid_selector)
    agent.start(server.join_token(NODE))
    # The workload holds its first SVID: from here on the agent wants no SVID of its own
    # accord, and its next poll is an hour away.
    poll("first SVID", lambda: FIRST in fetched_ids(agent))
    return agent


def test_an_entry_created_on_the_server_is_pushed_to_the_workload(
    base: Path, server: ServerProcess
) -> None:
    agent = started_agent(base, server)
    try:
        # Whether the stream is up yet or not: the message each new stream starts with makes
        # the agent sync too, so there is no race to lose here.
        server.create_entry(NODE, PUSHED, agent.uid_selector)
        poll("pushed SVID", lambda: PUSHED in fetched_ids(agent))
        assert "server does not push entry changes" not in agent.log_text()
    finally:
        agent.stop()


def server_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not served"
    return float(match.group(1))


def test_the_servers_stream_is_gone_once_the_agent_is(base: Path) -> None:
    """No leak on disconnect: the server's count of open Watch streams goes back to zero."""
    port = free_port()
    server = ServerProcess(base)
    prometheus = f'telemetry {{ Prometheus {{ host = "127.0.0.1" port = {port} }} }}\n'
    server.config.write_text(server.config.read_text() + prometheus)
    server.start()
    try:
        agent = started_agent(base, server)
        try:
            streams = "plastron_server_entry_watch_streams"
            poll("agent's stream open", lambda: server_metric(port, streams) == 1)
            pushes = server_metric(port, "plastron_server_entry_pushes_total")
            server.create_entry(NODE, PUSHED, agent.uid_selector)
            poll(
                "pushed", lambda: server_metric(port, "plastron_server_entry_pushes_total") > pushes
            )
        finally:
            agent.stop()
        poll("stream closed", lambda: server_metric(port, streams) == 0)
    finally:
        server.stop()


def test_an_agent_that_only_polls_still_gets_its_entries(base: Path, server: ServerProcess) -> None:
    agent = AgentProcess(base, server, sync_interval="1s", experimental_extra="entry_push = false")
    server.create_entry(NODE, FIRST, agent.uid_selector)
    agent.start(server.join_token(NODE))
    try:
        poll("first SVID", lambda: FIRST in fetched_ids(agent))
        server.create_entry(NODE, PUSHED, agent.uid_selector)
        poll("polled SVID", lambda: PUSHED in fetched_ids(agent))
    finally:
        agent.stop()


def test_a_server_that_stops_answering_is_noticed_and_the_push_resumes_with_it(
    base: Path, server: ServerProcess
) -> None:
    """SIGSTOP keeps the server's TCP connections up (its kernel still ACKs) while nothing
    answers: the half-open connection a vanished host or a dropped NAT mapping leaves. Without
    keepalive the agent's push stream would wait on it forever (its poll is an hour away)."""
    keepalive = 'server_keepalive_time = "1s" server_keepalive_timeout = "2s"'
    agent = started_agent(base, server, keepalive)
    assert server.proc.process is not None
    pid = server.proc.process.pid
    try:
        server.create_entry(NODE, PUSHED, agent.uid_selector)
        poll("pushed SVID (the stream is up)", lambda: PUSHED in fetched_ids(agent))
        os.kill(pid, signal.SIGSTOP)
        try:
            poll(
                "agent gave the silent connection up", lambda: KEEPALIVE_GAVE_UP in agent.log_text()
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        server.create_entry(NODE, AFTER_RESUME, agent.uid_selector)
        poll("pushed SVID after the server resumed", lambda: AFTER_RESUME in fetched_ids(agent))
        log = agent.log_text()
        assert log.count(KEEPALIVE_GAVE_UP) == 1, log
        assert "entry push stream lost" in log
    finally:
        agent.stop()
