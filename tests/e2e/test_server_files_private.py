"""A real ``plastron-server run``: everything it writes is its user's alone, and it refuses a
data_dir that others can reach rather than filling it."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PlastronServerProcess
from tests.processes import free_port

OTHER_UID = 65534


def _config(base: Path, data_dir: Path, port: int) -> str:
    # No KeyManager block: the disk KeyManager writes data_dir/keys/keys.json.
    return f"""
server {{
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{base}/api.sock"
  data_dir = "{data_dir}"
  log_file = "{data_dir}/server.log"
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" }} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-priv-", dir="/tmp"))  # short: socket path limit
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _server(base: Path, data_dir: Path) -> PlastronServerProcess:
    port = free_port()
    config = base / "server.conf"
    config.write_text(_config(base, data_dir, port))
    env = dict(os.environ)
    return PlastronServerProcess(
        base=base,
        config_path=config,
        data_dir=data_dir,
        port=port,
        socket_path=str(base / "api.sock"),
        log_path=base / "stdout.log",
        env=env,
    )


def _umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line in /proc/<pid>/status")


def test_every_file_in_data_dir_is_private(base: Path) -> None:
    data_dir = base / "var" / "data"  # its parent is missing too: both are created 0700
    server = _server(base, data_dir)
    server.start()
    try:
        assert server.process is not None
        assert _umask_of(server.process.pid) == 0o077
        token = server.run_cli("token", "generate", "-ttl", "600")
        assert token.returncode == 0, token.stderr
        names = {p.name for p in data_dir.iterdir()}
        assert {"datastore.sqlite3-wal", "datastore.sqlite3-shm"} <= names  # live WAL mode
        paths = [data_dir.parent, data_dir, *data_dir.rglob("*")]
        modes = {str(p.relative_to(base)): stat.S_IMODE(p.lstat().st_mode) for p in paths}
        for path in paths:
            want = 0o700 if path.is_dir() else 0o600
            got = modes[str(path.relative_to(base))]
            assert got == want, f"{path} is {got:04o}, want {want:04o}; all: {modes}"
        for must in ("datastore.sqlite3", "server.log", "keys/keys.json", "join_token.key"):
            assert f"var/data/{must}" in modes, modes
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["group-and-world-readable", "group-readable", "foreign"])
def test_a_data_dir_others_can_reach_is_refused_and_left_as_it_is(base: Path, kind: str) -> None:
    data_dir = base / "data"
    data_dir.mkdir()
    mode = {"group-and-world-readable": 0o755, "group-readable": 0o750, "foreign": 0o700}[kind]
    data_dir.chmod(mode)
    if kind == "foreign":
        os.chown(data_dir, OTHER_UID, OTHER_UID)
    server = _server(base, data_dir)
    with pytest.raises(RuntimeError, match="server exited with 1"):
        server.start()
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in server.log(), server.log()
    assert lines[0].startswith(f"Error: data_dir {data_dir} ")
    if kind == "foreign":
        assert f"belongs to uid {OTHER_UID}" in lines[0]
    else:
        assert f"has mode {mode:04o}" in lines[0] and "chmod 700" in lines[0]
    assert list(data_dir.iterdir()) == []
    assert stat.S_IMODE(data_dir.stat().st_mode) == mode  # never chmod-ed
