"""The disk KeyManager: the shared conformance suite plus its file-handling rules."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from plastron.errors import KeyManagerError
from plastron.keymanager import DiskKeyManager, KeyManager, KeyType
from tests.conformance.keymanager import PersistentKeyManagerConformance


class TestDiskKeyManager(PersistentKeyManagerConformance):
    @pytest.fixture
    def keymanager(self, tmp_path: Path) -> KeyManager:
        return DiskKeyManager(tmp_path / "keys")

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[], KeyManager]:
        return lambda: DiskKeyManager(tmp_path / "keys")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_directory_is_0700_and_file_is_0600(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "keys"
    km = DiskKeyManager(directory)
    km.generate_key("k", KeyType.EC_P256)
    assert mode(directory) == 0o700
    assert mode(directory / "keys.json") == 0o600


def test_only_keys_json_is_written(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    km = DiskKeyManager(directory)
    for key_id in ("x509-CA-A", "x509-CA-B", "JWT-Signer-A"):
        km.generate_key(key_id, KeyType.EC_P256)
    km.generate_key("x509-CA-A", KeyType.EC_P384)
    km.destroy_key("x509-CA-B")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keys", "keys.json"]
    doc = json.loads((directory / "keys.json").read_text())
    assert sorted(doc["keys"]) == ["JWT-Signer-A", "x509-CA-A"]
    assert doc["keys"]["x509-CA-A"]["type"] == "ec-p384"
    assert doc["keys"]["x509-CA-A"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_rejects_directory_writable_by_others(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(KeyManagerError, match="must not be writable by group or others"):
        DiskKeyManager(directory)


def test_rejects_keys_file_readable_by_others(tmp_path: Path) -> None:
    DiskKeyManager(tmp_path).generate_key("k", KeyType.EC_P256)
    (tmp_path / "keys.json").chmod(0o644)
    with pytest.raises(KeyManagerError, match="0644"):
        DiskKeyManager(tmp_path)


def test_rejects_symlinked_keys_file(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.json"
    DiskKeyManager(tmp_path / "src").generate_key("k", KeyType.EC_P256)
    (tmp_path / "src" / "keys.json").rename(real)
    target = tmp_path / "dst"
    target.mkdir(mode=0o700)
    (target / "keys.json").symlink_to(real)
    with pytest.raises(KeyManagerError, match="cannot open"):
        DiskKeyManager(target)


def test_rejects_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("")
    with pytest.raises(KeyManagerError, match="keys"):
        DiskKeyManager(tmp_path / "keys")


def test_rejects_keys_json_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "keys.json").mkdir()
    with pytest.raises(KeyManagerError, match="not a regular file"):
        DiskKeyManager(tmp_path)


def write_keys_file(directory: Path, content: bytes) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "keys.json"
    path.write_bytes(content)
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "version-1"),
        (b'{"version": 2, "keys": {}}', "version-1"),
        (b'{"version": 1}', '"keys"'),
        (b'{"version": 1, "keys": {"../x": {}}}', "key id"),
        (b'{"version": 1, "keys": {"k": 5}}', "not an object"),
        (b'{"version": 1, "keys": {"k": {"type": "ec-p256"}}}', "lacks"),
        (
            b'{"version": 1, "keys": {"k": {"type": "ec-p256", "private_key": "garbage"}}}',
            "cannot be loaded",
        ),
    ],
)
def test_rejects_corrupt_keys_file(tmp_path: Path, content: bytes, message: str) -> None:
    write_keys_file(tmp_path, content)
    with pytest.raises(KeyManagerError, match=message):
        DiskKeyManager(tmp_path)


def test_rejects_key_of_a_different_type_than_recorded(tmp_path: Path) -> None:
    DiskKeyManager(tmp_path).generate_key("k", KeyType.EC_P256)
    doc = json.loads((tmp_path / "keys.json").read_text())
    doc["keys"]["k"]["type"] = "rsa-2048"
    write_keys_file(tmp_path, json.dumps(doc).encode())
    with pytest.raises(KeyManagerError, match="recorded as rsa-2048") as info:
        DiskKeyManager(tmp_path)
    assert "BEGIN" not in str(info.value)


def test_rejects_oversize_keys_file(tmp_path: Path) -> None:
    write_keys_file(tmp_path, b" " * (DiskKeyManager.MAX_FILE_BYTES + 1))
    with pytest.raises(KeyManagerError, match="larger than"):
        DiskKeyManager(tmp_path)


def test_failed_write_keeps_memory_and_leaves_no_temp_file(tmp_path: Path) -> None:
    km = DiskKeyManager(tmp_path)
    (tmp_path / "keys.json").mkdir()  # the rename onto keys.json now fails, even for root
    with pytest.raises(KeyManagerError, match="cannot write"):
        km.generate_key("k", KeyType.EC_P256)
    assert km.get_public_keys() == []
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]
