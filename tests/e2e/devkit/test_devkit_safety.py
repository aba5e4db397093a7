"""What ``plastron-dev`` must never do: signal a process it did not start (a recycled pid), or
write its keys and sockets into a directory another user prepared (a shared /tmp)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plastron.devkit.environment import MARKER

DEV = [sys.executable, "-m", "plastron.devkit"]


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process plastron-dev did not start."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_down_leaves_a_recycled_pid_alone(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    # The record names the bystander's pid, but with another start time: the pid was recycled.
    (tmp_path / MARKER).touch()
    record = [{"name": "plastron-server", "pid": bystander.pid, "start_ticks": 1}]
    (tmp_path / "processes.json").write_text(json.dumps(record))
    down = subprocess.run(
        [*DEV, "down", "-dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert (down.returncode, down.stderr) == (0, "plastron-dev: stopped nothing (not running)\n")
    assert bystander.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_up_refuses_a_directory_of_another_user() -> None:
    directory = Path(tempfile.mkdtemp(prefix="pd-"))
    try:
        os.chown(directory, 65534, 65534)
        up = subprocess.run(
            [*DEV, "up", "-dir", str(directory), "-attestor", "join_token"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert (up.returncode, up.stderr) == (
            1,
            f"plastron-dev: {directory} belongs to another user\n",
        )
        assert list(directory.iterdir()) == []
    finally:
        subprocess.run([*DEV, "down", "-dir", str(directory)], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def test_up_refuses_a_bad_trust_domain_in_one_line(tmp_path: Path) -> None:
    up = subprocess.run(
        [*DEV, "up", "-dir", str(tmp_path), "-trustDomain", "Bad.Domain"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert up.returncode == 1
    assert up.stderr.startswith("plastron-dev: -trustDomain 'Bad.Domain': trust domain characters")
    assert up.stderr.count("\n") == 1
