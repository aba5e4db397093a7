"""``plastron-agent run`` refuses a data_dir that others can reach, before writing anything."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("mode", "owner"), [(0o755, None), (0o700, 65534)])
def test_agent_refuses_a_data_dir_others_can_reach(
    tmp_path: Path, mode: int, owner: int | None
) -> None:
    data_dir = tmp_path / "agent-data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    if owner is not None:
        os.chown(data_dir, owner, owner)
    config = tmp_path / "agent.conf"
    config.write_text(
        f"""
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  server_port = 1
  data_dir = "{data_dir}"
  socket_path = "{tmp_path}/public/api.sock"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{data_dir}" }} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "plastron.agent.cli.main", "run", "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"Error: data_dir {data_dir} "), lines[0]
    assert (f"belongs to uid {owner}" if owner else f"has mode {mode:04o}") in lines[0]
    assert list(data_dir.iterdir()) == []
    assert stat.S_IMODE(data_dir.stat().st_mode) == mode
    assert not (tmp_path / "public").exists()
