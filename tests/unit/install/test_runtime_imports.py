"""What a base install imports at run time: never grpcio (it is not a run-time dependency of
ours), and for a join_token/disk/SQLite configuration none of the extras' modules.

The check runs in a fresh interpreter: the server and agent entry points are imported, both
configurations validated through the real CLIs, and the agent's plugins built as ``run``
builds them; then ``sys.modules`` is read.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from plastron.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[3]
SOURCE_ROOTS = ("plastron", "server", "agent", "hsm", "tpm")
NEVER_AT_RUN_TIME = ("grpc",)
# every extra's modules (pkcs11, tpm2_pytss, psycopg, pymysql, asn1crypto, boto3...)
EXTRAS_MODULES = tuple(sorted({m for modules in EXTRA_MODULES.values() for m in modules}))

PROBE = """
import json, sys
from pathlib import Path
from plastron.server.cli.main import main as server_main
from plastron.agent.cli.main import main as agent_main
base = Path(sys.argv[1])
assert server_main(["validate", "-config", str(base / "server.conf")]) == 0
assert agent_main(["validate", "-config", str(base / "agent.conf")]) == 0
from plastron.agent.config import load_agent_config
from plastron.agent.plugin_loading import (
    build_key_manager, build_node_attestor, build_workload_attestors,
)
from plastron.server.plugin_loading import load_server_plugins, plugin_context
from plastron.server.config import load_server_config
agent = load_agent_config(base / "agent.conf", expand_env=False)
build_key_manager(agent), build_node_attestor(agent, "token"), build_workload_attestors(agent)
server = load_server_config(base / "server.conf", expand_env=False)
registries = load_server_plugins()
context = plugin_context(server, registries)
registries.datastores.create(server.datastore, context)
registries.key_managers.create(server.key_manager, context)
import plastron.server.main, plastron.agent.main  # the run paths too
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

SERVER_CONF = """
server {{
  bind_address = "127.0.0.1"
  bind_port = "18081"
  trust_domain = "example.org"
  data_dir = "{base}/server"
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" }} }}
  KeyManager "disk" {{ plugin_data {{ keys_path = "{base}/server/keys.json" }} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""
AGENT_CONF = """
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  server_port = "18081"
  data_dir = "{base}/agent"
  socket_path = "{base}/agent/api.sock"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{base}/agent" }} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""


def test_join_token_disk_configs_import_neither_grpcio_nor_any_extra(tmp_path: Path) -> None:
    (tmp_path / "server.conf").write_text(SERVER_CONF.format(base=tmp_path))
    (tmp_path / "agent.conf").write_text(AGENT_CONF.format(base=tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert "plastron" in loaded
    assert loaded.isdisjoint(NEVER_AT_RUN_TIME + EXTRAS_MODULES), sorted(
        loaded & set(NEVER_AT_RUN_TIME + EXTRAS_MODULES)
    )


def _imported_roots(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_source_file_imports_grpcio() -> None:
    """Statically, wherever the import is written: our code is grpclib-only. (The generated
    ``*_pb2_grpc.py`` stubs import grpc; nothing of ours imports them.)"""
    offenders = [
        str(path.relative_to(ROOT))
        for root in SOURCE_ROOTS
        for path in sorted((ROOT / root).rglob("*.py"))
        if not path.name.endswith("_pb2_grpc.py") and "grpc" in _imported_roots(path)
    ]
    assert offenders == []
