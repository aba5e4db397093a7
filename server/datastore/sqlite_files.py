"""The SQLite database file and its companions (-wal, -shm, -journal) are 0600.

SQLite creates a new database file with 0644 minus the umask, and gives the -wal and -shm files
it creates later the database file's own mode. So the file is created here, empty (an empty
file is an empty SQLite database) and 0600, before SQLite first opens it: all of them are then
the server's alone, whatever the process umask. A file of ours that an older version left
readable by others is tightened, with a warning, since others may have read it.
"""

from __future__ import annotations

import logging
import os
import stat

from sqlalchemy.engine import URL

from plastron.errors import DataStoreError

log = logging.getLogger(__name__)

COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def sqlite_file(url: URL) -> str:
    """The database file of a ``sqlite+pysqlite`` URL (a path, or a ``file:`` URI's path)."""
    database = url.database or ""
    if database.startswith("file:"):
        return database[len("file:") :]
    return database


def prepare_sqlite_file(path: str) -> None:
    """Create ``path`` empty with 0600 if it does not exist; tighten ours if others can read."""
    try:
        os.close(os.open(path, _CREATE_FLAGS, 0o600))
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise DataStoreError(f"datastore: cannot create {path}: {exc.strerror}") from None
    for name in (path, *(path + suffix for suffix in COMPANION_SUFFIXES)):
        _tighten(name)


def _tighten(name: str) -> None:
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataStoreError(f"datastore: cannot use {name}: {exc.strerror}") from None
    if not st.st_mode & 0o077 or st.st_uid != os.geteuid():
        return  # private already, or not ours to change (SQLite will say if it cannot open it)
    os.chmod(name, 0o600)
    log.warning(
        "datastore file was readable by group or others; now 0600 path=%s previous_mode=%04o",
        name,
        stat.S_IMODE(st.st_mode),
    )
