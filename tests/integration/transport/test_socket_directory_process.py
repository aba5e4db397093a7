"""A real ``plastron-server run`` whose admin socket would sit in a directory anyone can write
stops with one line and leaves that directory as it was (issue #12 item 4)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.processes import free_port

BIN = Path(sys.executable).parent


def test_server_refuses_a_world_writable_socket_directory(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    config = tmp_path / "server.conf"
    config.write_text(
        f"""
server {{
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port = {free_port()}
  socket_path = "{open_dir}/api.sock"
  data_dir = "{tmp_path}/data"
}}
plugins {{
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""
    )
    out = subprocess.run(
        [str(BIN / "plastron-server"), "run", "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out.stderr  # the rest is the INFO log of the start-up
    assert "socket directory" in errors[0] and str(open_dir) in errors[0], errors[0]
    assert "writable by others (mode 0777)" in errors[0]
    assert "Traceback" not in out.stderr
    assert stat.S_IMODE(os.stat(open_dir).st_mode) == 0o777
    assert os.listdir(open_dir) == []
