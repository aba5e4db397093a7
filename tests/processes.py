"""What the process-level tests share: a free port, polling with a deadline, stopping a child."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(what: str, fn: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    """Call ``fn`` until it returns a truthy value; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # remembered for the failure message
            last = exc
        time.sleep(0.05)  # polling interval, not a readiness guess
    raise AssertionError(f"{what}: not within {deadline:g}s (last: {last!r})")


def stop_process(proc: subprocess.Popen[bytes] | None) -> int | None:
    """SIGTERM, then SIGKILL after 20 s; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode
