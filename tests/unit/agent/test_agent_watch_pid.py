"""A process named by PID (the admin API's ``*ByPID`` calls) is held to what it was when it
was looked at, as a connected Workload API caller is: real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from plastron.agent.workloadapi.peertracker import CallerChanged, watch_pid
from plastron.errors import AttestationFailed, InvalidArgument

# Runs each line it reads as Python, then says "done".
_CHILD = """
import os, sys
print("ready", flush=True)
for line in sys.stdin:
    exec(line)
    print("done", flush=True)
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _run(proc: subprocess.Popen[str], code: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(code + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def test_a_process_that_exits_fails_the_check(child: subprocess.Popen[str]) -> None:
    watcher = watch_pid(child.pid)
    try:
        watcher.check()
        assert (watcher.credentials.uid, watcher.credentials.gid) == (os.geteuid(), os.getegid())
        child.kill()
        child.wait()
        with pytest.raises(CallerChanged, match=f"process {child.pid} has exited"):
            watcher.check()
    finally:
        watcher.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change a process's ids")
def test_a_process_whose_ids_change_fails_the_check(child: subprocess.Popen[str]) -> None:
    watcher = watch_pid(child.pid)
    try:
        _run(child, "os.setresuid(65534, 65534, 65534)")
        with pytest.raises(CallerChanged, match="effective uid 65534, was 0"):
            watcher.check()
    finally:
        watcher.close()


def test_bad_pids_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="pid must be a positive process ID"):
        watch_pid(0)
    with pytest.raises(InvalidArgument):
        watch_pid(-1)
    pid_max = int(open("/proc/sys/kernel/pid_max").read())  # noqa: SIM115
    with pytest.raises(AttestationFailed, match=f"process {pid_max + 1} does not exist"):
        watch_pid(pid_max + 1)
