"""<data_dir>/join_token.key: made once (0600, 32 random bytes as hex), reused, and refused
when anyone but the server's user could read or replace it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plastron.errors import ConfigError
from plastron.server.datastore.token_key import (
    KEY_FILE_NAME,
    JoinTokenHasher,
    load_or_create_join_token_key,
)


def test_made_once_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_join_token_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    again = load_or_create_join_token_key(tmp_path)
    assert again.key_id == first.key_id and again.digest("t") == first.digest("t")


def test_digests_depend_on_the_key() -> None:
    a, b = JoinTokenHasher.generate(), JoinTokenHasher.generate()
    assert a.digest("node-1") != b.digest("node-1") and a.key_id != b.key_id
    assert a.digest("node-1") != a.digest("NODE-1")
    assert a._key.hex() not in repr(a) and a.key_id in repr(a)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda p: p.chmod(0o644), "has mode 0644, open to group or others: chmod 600"),
        (lambda p: os.chown(p, 65534, 65534), "belongs to uid 65534"),
        (lambda p: p.write_text("not hex\n"), "must hold 32 bytes as 64 hex digits"),
        (lambda p: p.write_text("ab" * 16 + "\n"), "must hold 32 bytes"),
    ],
)
def test_a_key_file_others_control_or_a_bad_one_is_refused(
    tmp_path: Path, prepare: object, message: str
) -> None:
    load_or_create_join_token_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    prepare(path)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message) as err:
        load_or_create_join_token_key(tmp_path)
    assert str(path) in str(err.value)


def test_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("ab" * 32 + "\n")
    target.chmod(0o600)
    (tmp_path / KEY_FILE_NAME).symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        load_or_create_join_token_key(tmp_path)
