"""An agent whose /proc is not of its own PID namespace refuses its callers instead of
attesting whatever process has the caller's number there.

The kernel gives the agent its caller's PID in the agent's PID namespace; ``/proc/<pid>`` is
looked up in the namespace of the procfs mounted at /proc. Here the "agent" (the Workload API's
caller watcher) and its caller run in a new PID namespace: the caller is PID 2 there, and in
the host's /proc PID 2 is ``kthreadd``, owned by uid 0 as the caller is, so reading it would
identify the caller as a kernel thread. With a procfs of the namespace mounted (``unshare
--mount-proc``) the same caller is identified as itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a PID namespace",
)

WATCH_A_CALLER = """
import os, socket, tempfile, time
from agent.workloadapi.peertracker import watch_socket_peer
from plastron.errors import AttestationFailed

path = os.path.join(tempfile.mkdtemp(), "api.sock")
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()
if os.fork() == 0:
    caller = socket.socket(socket.AF_UNIX)
    caller.connect(path)
    time.sleep(30)
    os._exit(0)
conn, _ = server.accept()
try:
    watcher = watch_socket_peer(conn)
except AttestationFailed as exc:
    print("REFUSED", exc)
else:
    print("IDENTIFIED", watcher.pid, watcher._state.start_time)
"""


def _in_new_pid_namespace(*, own_proc: bool) -> str:
    command = ["unshare", "--pid", "--fork", "--mount"]
    if own_proc:
        command.append("--mount-proc")
    done = subprocess.run(
        [*command, sys.executable, "-c", WATCH_A_CALLER],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_proc_of_another_pid_namespace_is_refused() -> None:
    out = _in_new_pid_namespace(own_proc=False)
    assert out.startswith("REFUSED /proc is not of the agent's PID namespace"), out
    assert "process 2 here" in out, out


def test_a_proc_of_its_own_pid_namespace_identifies_the_caller() -> None:
    out = _in_new_pid_namespace(own_proc=True)
    assert out.startswith("IDENTIFIED 2 "), out
