"""Parsing the /proc/<pid> files the agent reads about a workload process.

Shared by the unix workload attestor (which reads by path) and the caller tracker (which reads
through a directory fd held since the caller connected).
"""

from __future__ import annotations

import os

# /proc/<pid>/status is a few KiB; anything much larger is not what we expect.
MAX_STATUS_BYTES = 64 * 1024
# /proc/<pid>/stat is one line of 52 numbers plus a 16-byte comm.
MAX_STAT_BYTES = 4096


class MalformedProcFile(ValueError):
    """A /proc file that does not have the expected shape."""


def stat_fields(raw: bytes) -> list[bytes]:
    """The fields of /proc/<pid>/stat after ``comm``: index 0 is field 3 (state).

    ``comm`` (field 2) may contain spaces and ')', so split after the last ')'.
    """
    end = raw.rfind(b")")
    if end < 0:
        raise MalformedProcFile("stat has no ')' after the command name")
    fields = raw[end + 2 :].split()
    if len(fields) < 20:
        raise MalformedProcFile(f"stat has {len(fields) + 2} fields, expected at least 22")
    return fields


def stat_state(fields: list[bytes]) -> str:
    """Field 3: R, S, D, Z (zombie), X (dead), ..."""
    return fields[0].decode("ascii", "replace")


def stat_start_time(fields: list[bytes]) -> str:
    """Field 22, clock ticks since boot: tells a PID apart from a later process reusing it."""
    return fields[19].decode("ascii", "replace")


def status_fields(text: str, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """The whitespace-split values of the ``Key:`` lines of /proc/<pid>/status named in keys.

    A key's value is that of the last line starting with ``Key:``. Only a newline ends a line:
    the kernel escapes it in the one field a process chooses (``Name``), so no other byte in
    a process name can start a line of its own. Looked up per key rather than by splitting
    every line: the agent reads this file several times per Workload API caller.
    """
    fields: dict[str, list[str]] = {}
    for key in keys:
        marker = f"\n{key}:"
        at = text.rfind(marker)
        if at >= 0:
            start = at + len(marker)
        elif text.startswith(f"{key}:"):
            start = len(key) + 1
        else:
            continue
        end = text.find("\n", start)
        fields[key] = text[start : end if end >= 0 else len(text)].split()
    return fields


def read_at(dir_fd: int, name: str, limit: int) -> bytes:
    """Read up to ``limit`` bytes of ``name`` inside the directory ``dir_fd`` (no symlinks).

    Raises OSError (ESRCH/ENOENT) once the process behind a /proc/<pid> fd has been reaped.
    """
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit and (chunk := os.read(fd, limit - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
