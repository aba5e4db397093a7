"""What the process-level tests share: a free port, polling with a deadline, waiting for a
server process to serve, the tail of its log, stopping a child."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from grpclib.client import Channel

from plastron.proto.grpc.health.v1 import health_grpc, health_pb2

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


async def admin_serving(socket_path: str) -> bool:
    """Whether the server's admin socket answers its health check with SERVING."""
    channel = Channel(path=socket_path)
    try:
        resp = await health_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2.0
        )
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except Exception:
        return False
    finally:
        channel.close()


def wait_until_serving(
    proc: subprocess.Popen[bytes], socket_path: str, deadline: float, log: Callable[[], str]
) -> None:
    """Until the server ``proc`` answers SERVING on its admin socket; RuntimeError with ``log()``
    if it exits first, or (after stopping it) if ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log()}")
        if os.path.exists(socket_path) and asyncio.run(admin_serving(socket_path)):
            return
        time.sleep(0.05)  # polling interval, not a readiness guess
    stop_process(proc)
    raise RuntimeError(f"server not healthy within {deadline:g}s:\n{log()}")


def log_tail(path: Path, limit: int = 6000) -> str:
    """The last ``limit`` characters of a log file ("" if it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""
