"""A real ``plastron-agent run``: umask 077, so everything it writes is its user's alone, while
the Workload API socket and the directories the agent made for it stay reachable by every
local user."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll

NOBODY = 65534
CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="paf-", dir="/tmp"))
    path.chmod(0o755)  # uid 65534 must reach the agent's socket below it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line in /proc/<pid>/status")


def test_agent_files_are_private_and_its_socket_public(base: Path) -> None:
    (base / "s").mkdir()
    server = ServerProcess(base / "s")
    server.start()
    agent = AgentProcess(base, server)
    try:
        agent.start(server.join_token(f"spiffe://{TD}/node"))
        poll("agent-data.json", (agent.data_dir / "agent-data.json").exists)
        assert agent.proc is not None and agent.proc.process is not None
        assert _umask_of(agent.proc.process.pid) == 0o077
        paths = [agent.data_dir, *agent.data_dir.rglob("*")]
        modes = {str(p): stat.S_IMODE(p.lstat().st_mode) for p in paths}
        assert {p.name for p in paths} >= {"agent-data.json", "keys.json"}, modes
        for path in paths:
            assert modes[str(path)] == (0o700 if path.is_dir() else 0o600), modes
        socket_path = Path(agent.socket_path)
        assert stat.S_IMODE(socket_path.lstat().st_mode) == 0o777
        for made in (socket_path.parent, socket_path.parent.parent):  # agent/ and public/
            assert stat.S_IMODE(made.stat().st_mode) == 0o755, made
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        reached = subprocess.run(
            [*as_nobody, sys.executable, "-c", CONNECT, str(socket_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert reached.returncode == 0, reached.stderr
    finally:
        agent.stop()
        server.stop()
