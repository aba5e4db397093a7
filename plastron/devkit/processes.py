"""Detached child processes whose pids are recorded in a file, so another ``plastron-dev``
invocation (``down``) can stop exactly them and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
STOP_DEADLINE_S = 20.0
RECORD_FILE = "processes.json"


class DevKitError(Exception):
    """A failure ``plastron-dev`` reports as one line on stderr (exit 1)."""


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    # The kernel's start time of the process (clock ticks since boot): a recycled pid has
    # another, so ``down`` never signals a process the kit did not start.
    start_ticks: int


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces, so split after ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, waiting to be reaped: nothing left to stop
        return None
    return int(fields[19])


def poll(what: str, check: Callable[[], T | None], deadline: float) -> T:
    """Call ``check`` until it returns a truthy value; DevKitError after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise DevKitError(f"{what} not within {deadline:g}s")
        time.sleep(0.1)  # polling interval with a deadline, not a readiness guess


class ProcessBook:
    """The processes one environment started, persisted in ``<dir>/processes.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RECORD_FILE
        self.entries: list[Recorded] = []
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self.entries = [
                    Recorded(str(r["name"]), int(r["pid"]), int(r["start_ticks"])) for r in raw
                ]
            except (ValueError, KeyError, TypeError) as exc:
                raise DevKitError(f"{self.path}: not a plastron-dev process record: {exc}") from exc

    def start(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in its own session (it outlives this command) with output in ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        ticks = _start_ticks(proc.pid)
        self.entries.append(Recorded(name, proc.pid, ticks if ticks is not None else -1))
        self._children[proc.pid] = proc
        self.save()
        return proc

    def save(self) -> None:
        data = [{"name": r.name, "pid": r.pid, "start_ticks": r.start_ticks} for r in self.entries]
        self.path.write_text(json.dumps(data, indent=2) + "\n")

    def running(self) -> list[Recorded]:
        return [r for r in self.entries if self._alive(r)]

    def _alive(self, record: Recorded) -> bool:
        child = self._children.get(record.pid)
        if child is not None:
            return child.poll() is None
        return _start_ticks(record.pid) == record.start_ticks

    def stop_all(self) -> list[str]:
        """SIGTERM each recorded process, last started first (the agent before its TPM), SIGKILL
        after STOP_DEADLINE_S; the names of those that were still running. Idempotent."""
        stopped = []
        for record in reversed(self.entries):
            if self._alive(record):
                self._stop(record)
                stopped.append(record.name)
        self.entries = []
        self.path.unlink(missing_ok=True)
        return stopped

    def _stop(self, record: Recorded) -> None:
        try:
            os.kill(record.pid, signal.SIGTERM)
            try:
                poll(f"{record.name} to exit", lambda: not self._alive(record), STOP_DEADLINE_S)
            except DevKitError:
                os.kill(record.pid, signal.SIGKILL)
                poll(f"{record.name} to exit after SIGKILL", lambda: not self._alive(record), 10)
        except ProcessLookupError:
            pass  # it exited between the check and the signal: what was wanted
        child = self._children.pop(record.pid, None)
        if child is not None:
            child.wait()
