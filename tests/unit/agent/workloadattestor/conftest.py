"""A real process to attest, whose /proc/<pid>/cgroup the test chooses (through a proc root
of the test's own: the attestors take ``proc_root`` in their constructor)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# (pid, proc root) for a process whose cgroup file holds the given text
CgroupProcess = Callable[[str], tuple[int, Path]]


@pytest.fixture
def process_in_cgroup(tmp_path: Path) -> Iterator[CgroupProcess]:
    children: list[subprocess.Popen[bytes]] = []
    root = tmp_path / "proc"

    def make(cgroup_text: str) -> tuple[int, Path]:
        child = subprocess.Popen(["sleep", "300"])
        children.append(child)
        (root / str(child.pid)).mkdir(parents=True)
        (root / str(child.pid) / "cgroup").write_text(cgroup_text)
        return child.pid, root

    yield make
    for child in children:
        child.kill()
        child.wait()
