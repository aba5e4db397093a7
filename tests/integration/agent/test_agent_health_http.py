"""The agent's health_checks HTTP listener: ready with a valid SVID, and still ready (serving
from its cache) while the server is down."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import AgentProcess, ServerProcess, free_port


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pah-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_agent_ready_and_live_with_server_down(base: Path) -> None:
    server = ServerProcess(base)
    server.start()
    port = free_port()
    agent = AgentProcess(
        base,
        server,
        extra_top=(
            'health_checks {\n  listener_enabled = true\n  bind_address = "127.0.0.1"\n'
            f"  bind_port = {port}\n}}\n"
        ),
    )
    try:
        agent.start(server.join_token("spiffe://example.org/health-node"))
        code, body = get(port, "/ready")
        assert code == 200 and body["ready"] is True
        subsystems = body["subsystems"]
        assert isinstance(subsystems, dict) and subsystems["agent_svid"]["healthy"] is True
        server.stop()
        code, body = get(port, "/live")
        assert code == 200 and body["live"] is True
        code, body = get(port, "/ready")
        assert code == 200
    finally:
        agent.stop()
        server.stop()
