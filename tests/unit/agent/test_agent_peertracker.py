"""The Workload API caller watcher: the process that connected, checked through a handle taken
at accept. Real processes connect to a real Unix socket; PID reuse is simulated in a fake /proc
(a real one cannot be forced to reuse a PID on demand)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plastron.agent.workloadapi.peertracker import (
    CallerChanged,
    CallerTracker,
    CallerWatcher,
    watch_socket_peer,
)
from plastron.errors import AttestationFailed
from plastron.transport.peer import PeerCredentials

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")

# The child connects, says "connected", then runs each line it reads as Python (as itself).
_CHILD = """
import ctypes, os, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(sys.argv[1])
print("connected", flush=True)
for line in sys.stdin:
    exec(line)
    print("done", flush=True)
"""


class Caller:
    """A child process connected to ``listener``, and the agent's end of its connection."""

    def __init__(self, listener: socket.socket, path: str, prefix: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", _CHILD, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "connected"
        self.conn, _ = listener.accept()

    def run(self, code: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(code + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def close(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    # Not under tmp_path: its parents are 0700 and the uid-65534 child must reach the socket.
    directory = Path(tempfile.mkdtemp(prefix="ppt-", dir="/tmp"))
    directory.chmod(0o755)
    path = str(directory / "s.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o777)  # the uid-65534 child must connect
    sock.listen()
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _connect(listener: tuple[socket.socket, str], as_nobody: bool = False) -> Caller:
    prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    return Caller(listener[0], listener[1], prefix if as_nobody else [])


def test_unchanged_caller_passes(listener: tuple[socket.socket, str]) -> None:
    caller = _connect(listener)
    watcher = watch_socket_peer(caller.conn)
    try:
        assert watcher.pid == caller.proc.pid
        watcher.check()
        watcher.check()
    finally:
        watcher.close()
        caller.close()


def test_exited_caller_fails_as_zombie_and_after_reaping(
    listener: tuple[socket.socket, str],
) -> None:
    caller = _connect(listener)
    watcher = watch_socket_peer(caller.conn)
    try:
        assert caller.proc.stdin is not None
        caller.proc.stdin.close()  # the child's loop ends: it exits, unreaped
        os.waitid(os.P_PID, caller.proc.pid, os.WEXITED | os.WNOWAIT)
        with pytest.raises(CallerChanged, match=f"process {caller.proc.pid} has exited"):
            watcher.check()
        caller.proc.wait()
        with pytest.raises(CallerChanged, match="has exited"):
            watcher.check()
    finally:
        watcher.close()
        caller.close()


@needs_root
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("os.setresuid(65534, 65534, 65534)", "effective uid 65534, was 0"),
        ("os.setresuid(65534, 0, 0)", "real uid 65534, was 0"),
        ("os.setresgid(65534, 65534, 65534)", "effective gid 65534, was 0"),
        ("os.setresgid(65534, 0, 0)", "real gid 65534, was 0"),
    ],
)
def test_changed_ids_fail(listener: tuple[socket.socket, str], change: str, reason: str) -> None:
    caller = _connect(listener)  # connects as root
    watcher = watch_socket_peer(caller.conn)
    try:
        watcher.check()
        caller.run(change)
        with pytest.raises(CallerChanged, match=reason):
            watcher.check()
    finally:
        watcher.close()
        caller.close()


@needs_root
def test_non_dumpable_caller_fails(listener: tuple[socket.socket, str]) -> None:
    """After a setuid exec the kernel makes the process non-dumpable, and it stays so even when
    the program drops back to the caller's ids; PR_SET_DUMPABLE 0 gives the same state without
    a setuid binary."""
    caller = _connect(listener, as_nobody=True)
    watcher = watch_socket_peer(caller.conn)
    try:
        watcher.check()
        caller.run("ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)")
        with pytest.raises(
            CallerChanged, match=r"environ owner 0:0, was 65534:65534 \(no longer dumpable"
        ):
            watcher.check()
    finally:
        watcher.close()
        caller.close()


def _fake_proc(root: Path, pid: int, start_time: str, uid: int) -> None:
    proc = root / str(pid)
    proc.mkdir(exist_ok=True)
    fields = ["S", *["0"] * 18, start_time, *["0"] * 30]
    (proc / "stat").write_text(f"{pid} (a) b) {' '.join(fields)}\n")
    (proc / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n")
    (proc / "environ").touch()


def test_pid_reused_by_a_later_process_fails(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, start_time="1000", uid=1000)
    watcher = CallerWatcher.open(PeerCredentials(4242, 1000, 0), proc_root=str(tmp_path))
    try:
        watcher.check()
        _fake_proc(tmp_path, 4242, start_time="2000", uid=1000)
        with pytest.raises(CallerChanged, match=r"start time 2000, was 1000 \(PID reused\)"):
            watcher.check()
    finally:
        watcher.close()


def test_caller_already_changed_at_accept_is_refused(tmp_path: Path) -> None:
    """SO_PEERCRED says uid 1000 but /proc/<pid> is now someone else's: refused at once."""
    _fake_proc(tmp_path, 4242, start_time="1000", uid=0)
    with pytest.raises(CallerChanged, match="effective uid/gid 0/0, but it connected as 1000/0"):
        CallerWatcher.open(PeerCredentials(4242, 1000, 0), proc_root=str(tmp_path))
    with pytest.raises(CallerChanged, match="process 4343 has exited"):
        CallerWatcher.open(PeerCredentials(4343, 1000, 0), proc_root=str(tmp_path))
    with pytest.raises(AttestationFailed, match="PID 0 is not visible"):
        CallerWatcher.open(PeerCredentials(0, 1000, 0), proc_root=str(tmp_path))


def test_closed_watcher_fails_and_tracker_closes_its_fds(
    listener: tuple[socket.socket, str],
) -> None:
    caller = _connect(listener)
    before = len(os.listdir("/proc/self/fd"))
    tracker = CallerTracker()

    class Transport:
        def get_extra_info(self, name: str) -> object:
            return caller.conn if name == "socket" else None

    transport = Transport()
    try:
        tracker.connection_made(transport)
        watcher = tracker.watcher_for(transport)
        assert len(os.listdir("/proc/self/fd")) > before
        tracker.connection_lost(transport)
        assert len(tracker) == 0
        assert len(os.listdir("/proc/self/fd")) == before
        with pytest.raises(CallerChanged, match="is closed"):
            watcher.check()
        with pytest.raises(AttestationFailed, match="not identified when it connected"):
            tracker.watcher_for(transport)
    finally:
        caller.close()
