"""``log_format`` and ``log_file`` on a real server and agent: one parseable line per event,
the file created 0600 and appended to, lifecycle events at INFO with their fields."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.agent_processes import AgentProcess, ServerProcess
from tests.processes import poll


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-log-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _json_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _logfmt_lines(path: Path) -> list[dict[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        pairs = {}
        for match in re.finditer(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)', line):
            raw = match.group(2)
            pairs[match.group(1)] = json.loads(raw) if raw.startswith('"') else raw
        assert "msg" in pairs, line
        out.append(pairs)
    return out


def _find(lines: list[dict], msg: str) -> dict:  # type: ignore[type-arg]
    found = [line for line in lines if line["msg"] == msg]
    assert found, f"no {msg!r} line in {[line['msg'] for line in lines]}"
    return found[-1]


def test_server_json_and_agent_logfmt_files(base: Path) -> None:
    server_log = base / "logs" / "server.jsonl"
    agent_log = base / "logs" / "agent.log"
    (base / "logs").mkdir()
    agent_log.write_text('msg="an earlier run"\n')  # an existing file is appended to
    agent_log.chmod(0o600)
    server = ServerProcess(base, f'log_format = "json"\n  log_file = "{server_log}"')
    server.start()
    agent = AgentProcess(base, server, agent_extra=f'log_file = "{agent_log}"')
    try:
        agent.start(server.join_token())
        agent_id = poll("agent listed", lambda: "spiffe://" in server.agents() and server.agents())
        sid = next(w for w in agent_id.split() if w.startswith("spiffe://example.org/spire/agent"))
        assert agent.stop() == 0  # before the eviction, which would make it exit by itself
        assert server.cli("agent", "evict", "-spiffeID", sid).returncode == 0
    finally:
        agent.stop()
        server.stop()

    assert stat.S_IMODE(server_log.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent_log.stat().st_mode) == 0o600
    lines = _json_lines(server_log)
    started = _find(lines, "server started")
    assert started["level"] == "info" and started["trust_domain"] == "example.org"
    assert started["version"] and "KeyManager:disk" in started["plugins"]  # type: ignore[operator]
    attested = _find(lines, "agent attested")
    assert attested["agent_id"] == sid and attested["type"] == "join_token"
    assert _find(lines, "agent evicted")["agent_id"] == sid
    assert _find(lines, "x509 ca prepared")["authority_id"]
    assert _find(lines, "server stopping")["signal"] == "SIGTERM"
    assert _find(lines, "server stopped")

    assert agent_log.read_text().startswith('msg="an earlier run"\n')
    alines = _logfmt_lines(agent_log)[1:]
    astart = _find(alines, "agent starting")
    assert astart["trust_domain"] == "example.org"
    assert "NodeAttestor:join_token" in astart["plugins"]
    assert _find(alines, "node attestation succeeded")["spiffe_id"] == sid
    assert _find(alines, "agent stopping")["signal"] == "SIGTERM"
    assert _find(alines, "agent stopped")
    assert all(line["time"] and line["level"] for line in alines)
    # the process's stdout/stderr carry nothing once log_file is set
    assert "level=" not in agent.proc.log() and '"level"' not in server.proc.log()  # type: ignore[union-attr]


def test_log_file_that_cannot_be_opened_is_one_line(base: Path) -> None:
    server = ServerProcess(base, f'log_file = "{base}/missing/dir/server.log"')
    server.proc.start()
    assert server.proc.wait() == 1
    out = server.proc.log().strip().splitlines()
    assert out == [
        f"Error: cannot open log_file {base}/missing/dir/server.log: No such file or directory"
    ], out
    # refused before data_dir is made, as validate refuses it (test_validate_matches_run.py)
    assert not os.path.exists(base / "server-data")
