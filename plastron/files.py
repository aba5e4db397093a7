"""Files and directories that hold secrets: written without trusting what is already at the
target path, kept private to the process's user.

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
import stat
from pathlib import Path

from plastron.errors import ConfigError

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


PRIVATE_UMASK = 0o077
_GROUP_OR_OTHER = 0o077


def restrict_umask() -> None:
    """From here on every file and directory this process creates is its user's alone (0600,
    0700) unless it sets a mode itself afterwards (the agent's public socket does)."""
    os.umask(PRIVATE_UMASK)


def ensure_private_dir(path: Path, what: str) -> None:
    """Make ``path`` (and any missing parent) with mode 0700, or accept an existing directory
    only if it is private: owned by this process's user, no access for group or others.

    An existing directory is never chmod-ed: it may be shared (a data_dir set to /var/lib or
    /tmp by mistake), and what it held while open may already have been read, which an
    operator should know about. Raises ConfigError with one line naming the path.
    """
    missing: list[Path] = []
    cursor = path
    while not os.path.lexists(cursor) and cursor != cursor.parent:
        missing.append(cursor)
        cursor = cursor.parent
    for new_dir in reversed(missing):
        try:
            os.mkdir(new_dir, 0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: checked below like any existing one
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot create {new_dir}: {exc.strerror}") from None
        os.chmod(new_dir, 0o700)  # ours: exact, whatever the umask
    check_private_dir(path, what)


def check_private_dir(path: Path, what: str) -> None:
    """Refuse (ConfigError) a directory that is not ours alone."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{what} {path} belongs to uid {st.st_uid}, not to this process's uid "
            f"{os.geteuid()}; it must be this user's own directory"
        )
    if st.st_mode & _GROUP_OR_OTHER:
        raise ConfigError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}, open to group or others; "
            f"it holds keys and secrets: chmod 700 {path} (and check who read it)"
        )
