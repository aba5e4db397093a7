"""The key that join tokens are stored under: rows hold HMAC-SHA256(key, token), never a token.

A datastore dump or backup then gives no usable token, even a short one chosen by an operator
(``CreateJoinToken`` accepts a given value), since guessing needs the key, which lives outside
the database: ``<data_dir>/join_token.key``, 32 random bytes as hex, mode 0600, made at the
first start. Servers that share one datastore must share this file (copy it to each); every
row records the key's id, so a server that finds rows made under another key says so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from plastron.errors import ConfigError

KEY_FILE_NAME = "join_token.key"
KEY_BYTES = 32
KEY_ID_CHARS = 16
DIGEST_CHARS = 64  # hex SHA-256
_KEY_ID_LABEL = b"plastron join-token key id"
_MAX_FILE_BYTES = 256


class JoinTokenHasher:
    """Keyed digests of join tokens: equal tokens give equal digests under one key only."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a join-token key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        # A digest of a fixed label: names the key without revealing it (HMAC is a PRF).
        self.key_id = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_CHARS]

    @classmethod
    def generate(cls) -> JoinTokenHasher:
        return cls(secrets.token_bytes(KEY_BYTES))

    def digest(self, token: str) -> str:
        return hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"JoinTokenHasher(key_id={self.key_id})"


def load_or_create_join_token_key(data_dir: Path) -> JoinTokenHasher:
    """The server's join-token key from ``data_dir``, made (0600) if there is none yet."""
    path = data_dir / KEY_FILE_NAME
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):  # made by another process meanwhile: theirs
        _create(path)
    try:
        return _load(path)
    except FileNotFoundError:
        raise ConfigError(f"join-token key {path} vanished while being created") from None


def _load(path: Path) -> JoinTokenHasher:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"join-token key {path} is a symbolic link, not a file") from None
        raise ConfigError(f"join-token key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        _check_private_file(path, os.fstat(fh.fileno()))
        text = fh.read(_MAX_FILE_BYTES + 1)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
        return JoinTokenHasher(key)
    except ValueError:
        raise ConfigError(
            f"join-token key {path} must hold {KEY_BYTES} bytes as {2 * KEY_BYTES} hex digits"
        ) from None


def _check_private_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"join-token key {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"join-token key {path} belongs to uid {st.st_uid}, not to this process's uid "
            f"{os.geteuid()}"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"join-token key {path} has mode {stat.S_IMODE(st.st_mode):04o}, open to group or "
            f"others: chmod 600 {path}"
        )


def _create(path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ConfigError(f"join-token key {path}: cannot create it: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES).hex().encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)  # no half-written key left for the next start
        raise ConfigError(f"join-token key {path}: cannot write it: {exc.strerror}") from None
