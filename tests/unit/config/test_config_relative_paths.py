"""Relative file paths in plugin_data resolve from the config file's directory: the loaders
record that directory, and every plugin that reads files takes relative paths from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from plastron.agent.config import load_agent_config
from plastron.agent.plugin_loading import build_key_manager
from plastron.plugins import PluginContext
from plastron.server.config import load_server_config, parse_server_config
from plastron.server.datastore.plugin import sql_config

DATA = Path(__file__).parent / "data"
SERVER = """
server {
  trust_domain = "example.org"
  data_dir = "/var/lib/plastron"
}
plugins {
  DataStore "sql" { plugin_data {
    database_type = "mysql"
    connection_string = "spire:pw@tcp(db.example.org:3306)/spire"
    root_ca_path = "tls/root.pem"
    client_cert_path = "/abs/client.pem"
  } }
  NodeAttestor "join_token" { plugin_data {} }
}
"""
AGENT = """
agent {
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  data_dir = "/nonexistent/agent-data"
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "disk" { plugin_data { directory = "keys" } }
  WorkloadAttestor "unix" { plugin_data {} }
}
"""


def test_loaders_record_the_config_files_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA.parent)  # a relative -config path is made absolute
    server = load_server_config(Path("data/server.conf"), expand_env=False)
    agent = load_agent_config(Path("data/agent.conf"), expand_env=False)
    assert server.config_dir == agent.config_dir == DATA
    assert parse_server_config(SERVER).config_dir is None  # text has no directory


def test_plugin_context_resolves_relative_paths_only() -> None:
    context = PluginContext(base_dir=Path("/etc/plastron"))
    assert context.resolve("root.pem") == Path("/etc/plastron/root.pem")
    assert context.resolve("/srv/root.pem") == Path("/srv/root.pem")
    assert PluginContext().resolve("root.pem") == Path("root.pem")


def test_datastore_tls_files_resolve_from_the_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "server.conf"
    conf.write_text(SERVER)
    cfg = load_server_config(conf, expand_env=False)
    sql = sql_config(cfg.datastore, PluginContext(base_dir=cfg.config_dir))
    assert sql.root_ca_path == str(tmp_path / "tls" / "root.pem")
    assert sql.client_cert_path == "/abs/client.pem"
    # a connection string, not a file path
    assert sql.connection_string == "spire:pw@tcp(db.example.org:3306)/spire"


def test_agent_disk_key_manager_directory_resolves_from_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    conf = conf_dir / "agent.conf"
    conf.write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    build_key_manager(load_agent_config(conf, expand_env=False))
    assert (conf_dir / "keys").is_dir()
    assert not (tmp_path / "keys").exists()
