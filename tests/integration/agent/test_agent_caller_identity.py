"""A real agent process: the Workload API caller is the process that connected, checked after
attestation, so a connection cannot be handed to a process that becomes someone else.

The attack: an unprivileged process connects, forks, and exec()s a setuid-root binary (same PID,
euid 0) while its child asks for an X509-SVID on the inherited connection. Reading /proc/<pid>
at request time would give the child root's SVID and key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll
from grpclib.client import Channel

from plastron.agent.cli.workload_client import METADATA
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as other users")

NODE = f"spiffe://{TD}/node"
ROOT_WORKLOAD = f"spiffe://{TD}/root-workload"
NOBODY_WORKLOAD = f"spiffe://{TD}/nobody"
NOBODY = 65534
FORK_CALLER = Path(__file__).with_name("fork_caller.py")


@dataclass
class Env:
    server: ServerProcess
    agent: AgentProcess
    setuid_sleep: Path


def _as_nobody(*args: str) -> list[str]:
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        sys.executable,
        str(FORK_CALLER),
        *args,
    ]


def _fork_caller(env: Env, mode: str, method: str = "x509") -> dict[str, Any]:
    """Run fork_caller.py as uid 65534; its child's answer."""
    out = subprocess.run(
        _as_nobody(env.agent.socket_path, mode, method, str(env.setuid_sleep)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    assert lines, f"fork_caller printed nothing: {out.stderr}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _setuid_copy(base: Path) -> Path:
    """A setuid-root copy of sleep, somewhere uid 65534 can reach and suid is honoured."""
    directory = base / "bin"
    directory.mkdir()
    directory.chmod(0o755)
    target = directory / "sleep"
    shutil.copy(shutil.which("sleep") or "/usr/bin/sleep", target)
    os.chown(target, 0, 0)
    target.chmod(0o4755)
    if os.statvfs(target).f_flag & os.ST_NOSUID:
        pytest.skip(f"{base} is on a nosuid filesystem")
    return target


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="pci-", dir="/tmp"))
    base.chmod(0o755)
    # Separate directories: the server may tighten its admin socket's; uid 65534 must reach
    # the agent's socket and the setuid binary.
    (base / "s").mkdir()
    (base / "a").mkdir(mode=0o755)
    server = ServerProcess(base / "s")
    server.start()
    agent = AgentProcess(base / "a", server)
    try:
        server.create_entry(NODE, ROOT_WORKLOAD, "unix:uid:0")
        server.create_entry(NODE, NOBODY_WORKLOAD, f"unix:uid:{NOBODY}")
        agent.start(server.join_token(NODE))
        ready = Env(server, agent, _setuid_copy(base / "a"))
        # Both entries synced: root sees its SVID; uid 65534 (the legitimate case) sees its own.
        poll("root SVID", lambda: ROOT_WORKLOAD in agent.cli("api", "fetch", "x509").stdout)
        poll("nobody SVID", lambda: _fork_caller(ready, "stay")["status"] == "OK")
        yield ready
    finally:
        agent.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("method", ["x509", "jwt", "sds"])
def test_child_of_a_setuid_exec_gets_no_root_svid(env: Env, method: str) -> None:
    result = _fork_caller(env, "exec", method)
    assert result["ids"] == []
    assert result["status"] == "PERMISSION_DENIED", result
    connector = result["connector"]
    assert f"is not the caller that connected: effective uid 0, was {NOBODY}" in result["message"]
    log = env.agent.log_text()
    refused = 'level=warning msg="workload API caller refused" logger=plastron.agent.workloadapi'
    assert any(refused in line and f" pid={connector} " in line for line in log.splitlines()), log


def test_child_of_an_exited_connector_gets_nothing(env: Env) -> None:
    result = _fork_caller(env, "exit")
    assert result["status"] == "PERMISSION_DENIED", result
    assert f"process {result['connector']} has exited" in result["message"]


@pytest.mark.parametrize("method", ["x509", "jwt", "sds"])
def test_forked_child_of_an_unchanged_connector_gets_its_own_svid(env: Env, method: str) -> None:
    result = _fork_caller(env, "stay", method)
    assert result == {"connector": result["connector"], "status": "OK", "ids": [NOBODY_WORKLOAD]}


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _fetch_on(channel: Channel) -> list[str]:
    stub = SpiffeWorkloadAPIStub(channel)
    async with stub.FetchX509SVID.open(metadata=METADATA, timeout=10) as stream:
        await stream.send_message(pb.X509SVIDRequest(), end=True)
        msg: pb.X509SVIDResponse = await stream.recv_message()
        await stream.cancel()
    return [s.spiffe_id for s in msg.svids]


async def test_connection_close_releases_the_callers_handles(env: Env) -> None:
    """Each open connection holds the caller's /proc directory (and pidfd); closing it gives
    them back: no fd leak in the agent."""
    assert env.agent.proc is not None and env.agent.proc.process is not None
    agent_pid = env.agent.proc.process.pid
    baseline = _open_fds(agent_pid)
    channels = [Channel(path=env.agent.socket_path) for _ in range(20)]
    try:
        for channel in channels:
            assert await _fetch_on(channel) == [ROOT_WORKLOAD]
        # socket + /proc/<pid> + pidfd per connection (the pidfd where the kernel has one)
        assert _open_fds(agent_pid) >= baseline + 2 * len(channels)
    finally:
        for channel in channels:
            channel.close()
    await asyncio.to_thread(
        poll, "agent fds back to baseline", lambda: _open_fds(agent_pid) <= baseline + 2
    )
