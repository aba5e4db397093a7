"""Writing files that may hold secrets without trusting what is already at the target path.

A CLI run as root with ``-write DIR`` must not open an existing ``DIR/key.pem`` (a file or a
symlink another user made there beforehand) and pour a private key into it. So the data goes
to a fresh file in the same directory, created exclusively (``O_EXCL | O_NOFOLLOW``) with
mode 0600, and is then renamed over the target: whatever was at the path (a file, or a
symlink, which ``rename`` replaces rather than follows) is swapped for our own file, and the
inode another user may hold open never receives the data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically make ``path`` a new file of ours holding ``data`` with ``mode``.

    Raises OSError naming ``path`` (the temporary file removed) when the directory cannot take
    the file or ``path`` is a directory.
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the target
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)  # exact mode, whatever the umask
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
