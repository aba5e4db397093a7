"""Bind a listening Unix socket without changing, or trusting, a directory we did not make.

The socket is bound under a temporary name in its directory, given its final mode, then renamed
into place, so no client can connect while it still has the process umask's permissions. A
leftover socket file is removed only if it is a socket and nobody answers on it.

Directories: those on the way that do not exist are created with ``dir_mode`` and are the only
ones whose mode is ever set (``socket_path = "/tmp/api.sock"`` must leave /tmp as it is). Every
directory from the socket's up to ``/`` must be owned by root or by us, and one that others can
write must be sticky; in a sticky directory others can write (``/tmp``), the socket file must
end up ours. Otherwise another user could rename the socket away and put their own in its
place, and every client would talk to them.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
from pathlib import Path

from plastron.errors import FailedPrecondition, InvalidArgument
from plastron.transport.limits import listen_backlog

MAX_UDS_PATH = 107  # sun_path is 108 bytes including the NUL
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _create_missing_dirs(directory: Path, dir_mode: int) -> None:
    """mkdir each missing directory down to ``directory``, each set to exactly ``dir_mode``."""
    missing: list[Path] = []
    cursor = directory
    while not os.path.lexists(cursor):
        missing.append(cursor)
        cursor = cursor.parent
    for new_dir in reversed(missing):
        try:
            os.mkdir(new_dir, dir_mode)
        except FileExistsError:
            continue  # someone else made it meanwhile: theirs, so checked, never changed
        os.chmod(new_dir, dir_mode)  # mkdir applied the umask; this one is ours to set


def _check_directory(directory: Path, real: Path, *, holds_socket: bool) -> bool:
    """Refuse a directory another user could use to swap the socket; True when it is sticky
    and writable by others (then the socket file itself must be ours)."""
    st = os.lstat(real)
    if not stat.S_ISDIR(st.st_mode):
        raise FailedPrecondition(f"uds: {real} is not a directory")
    shown = f"{real}" if real == directory else f"{real} (for {directory})"
    if st.st_uid not in (0, os.geteuid()):
        raise FailedPrecondition(
            f"uds: directory {shown} belongs to uid {st.st_uid}, who could replace the socket;"
            " use a directory owned by root or by this user"
        )
    if not st.st_mode & _WRITABLE_BY_OTHERS:
        return False
    if not st.st_mode & stat.S_ISVTX:
        what = "socket directory" if holds_socket else "directory above the socket"
        raise FailedPrecondition(
            f"uds: {what} {shown} is writable by others (mode"
            f" {stat.S_IMODE(st.st_mode):04o}) and not sticky, so anyone could replace the"
            " socket; use a private directory"
        )
    return True


def _check_directories(directory: Path) -> bool:
    """Check the socket's directory and every one above it; True if the socket's own is a
    sticky directory others can write."""
    real = directory.resolve(strict=True)
    shared_sticky = _check_directory(directory, real, holds_socket=True)
    for parent in real.parents:
        _check_directory(parent, parent, holds_socket=False)
    return shared_sticky


def _remove_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"uds: {path} exists and is not a socket; refusing to remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
    else:
        raise FailedPrecondition(f"uds: another server is listening on {path}")
    finally:
        probe.close()
    path.unlink(missing_ok=True)


def _check_socket_is_ours(path: Path) -> None:
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        raise FailedPrecondition(
            f"uds: {path} was replaced by another user's file in a shared directory"
        )


def bind_unix_socket(path: str, *, mode: int, dir_mode: int) -> socket.socket:
    """A listening Unix socket at `path` with permissions `mode` from the first connect on."""
    if not os.path.isabs(path) or len(os.fsencode(path)) > MAX_UDS_PATH:
        raise InvalidArgument(
            f"uds: socket path {path!r} must be absolute and at most {MAX_UDS_PATH} bytes"
        )
    final = Path(path)
    _create_missing_dirs(final.parent, dir_mode)
    shared_sticky = _check_directories(final.parent)
    _remove_stale_socket(final)
    staging = final.with_name(f".{final.name}.{secrets.token_hex(4)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        os.chmod(staging, mode)
        sock.listen(listen_backlog())
        os.rename(staging, final)
        if shared_sticky:
            _check_socket_is_ours(final)
    except BaseException:
        sock.close()
        staging.unlink(missing_ok=True)
        raise
    sock.setblocking(False)
    return sock
