"""SPIRE-shaped server.conf and agent.conf parse into the typed config, in HCL and in JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import hcl
import pytest

from plastron.agent.config import AgentConfig, load_agent_config, parse_agent_config
from plastron.configs.telemetry import PrometheusConfig
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.plugins import PluginContext
from plastron.server.config import ServerConfig, load_server_config, parse_server_config
from plastron.server.datastore.config import to_driver_target
from plastron.server.datastore.plugin import sql_config
from plastron.spiffe.ids import SpiffeId

DATA = Path(__file__).parent / "data"


def test_server_conf() -> None:
    c = load_server_config(DATA / "server.conf", expand_env=False)
    assert isinstance(c, ServerConfig)
    assert c.trust_domain.name == "example.org"
    assert (c.bind_address, c.bind_port) == ("127.0.0.1", 8081)
    assert c.data_dir == Path(".data")
    assert c.log_level == "DEBUG"
    assert c.ca_key_type is KeyType.EC_P384
    assert c.jwt_key_type is KeyType.EC_P384  # defaults to ca_key_type, as SPIRE
    assert c.ca_ttl == dt.timedelta(days=7)
    assert c.default_x509_svid_ttl == dt.timedelta(minutes=90)
    assert c.agent_ttl == c.default_x509_svid_ttl
    assert c.default_jwt_svid_ttl == dt.timedelta(minutes=5)
    assert c.admin_ids == (SpiffeId.parse("spiffe://example.org/admin/alice"),)
    assert c.ca_subject.country == ("US",)
    assert c.ratelimit.attestation is False and c.ratelimit.signing is True
    assert c.experimental.challenge_timeout == dt.timedelta(seconds=10)
    assert c.health_checks.listener_enabled and c.health_checks.bind_port == 8080
    assert c.telemetry.prometheus == PrometheusConfig(port=9988)
    assert [p.name for p in c.plugins.of_type("NodeAttestor")] == ["join_token", "x509pop"]
    assert c.key_manager is not None and c.key_manager.name == "pkcs11"
    assert c.key_manager.plugin_data["pin_env"] == "PLASTRON_HSM_PIN"
    assert c.plugins.of_type("UpstreamAuthority") == ()  # enabled = false
    assert c.datastore.plugin_data["database_type"] == "sqlite3"
    assert "PLASTRON_HSM_PIN" not in repr(c)  # plugin_data stays out of repr


def test_agent_conf() -> None:
    c = load_agent_config(DATA / "agent.conf", expand_env=False)
    assert isinstance(c, AgentConfig)
    assert (c.server_address, c.server_port) == ("127.0.0.1", 8081)
    assert c.trust_bundle_path == Path("conf/agent/dummy_root_ca.crt")
    assert c.trust_bundle_url is None and not c.insecure_bootstrap
    assert c.trust_bundle_format == "pem"
    assert c.socket_path == Path("/tmp/plastron-agent/public/api.sock")
    assert c.workload_x509_svid_key_type is KeyType.RSA_2048
    assert c.experimental.sync_interval == dt.timedelta(seconds=10)
    assert c.x509_svid_cache_max_size == 1000
    assert [p.name for p in c.plugins.of_type("WorkloadAttestor")] == ["unix"]
    assert c.key_manager is not None and c.key_manager.plugin_data["directory"] == "./.data"


@pytest.mark.parametrize(
    ("name", "parse"), [("server.conf", parse_server_config), ("agent.conf", parse_agent_config)]
)
def test_json_form_gives_the_same_config(name: str, parse: object) -> None:
    text = (DATA / name).read_text()
    as_json = json.dumps(hcl.loads(text))
    assert parse(as_json) == parse(text)  # type: ignore[operator]


def test_hcl_json_with_blocks_as_lists() -> None:
    doc = {
        "server": [{"trust_domain": "example.org", "data_dir": "/d"}],
        "plugins": [{"NodeAttestor": [{"join_token": [{"plugin_data": [{}]}]}]}],
    }
    c = parse_server_config(json.dumps(doc))
    assert [p.name for p in c.plugins.of_type("NodeAttestor")] == ["join_token"]


def test_minimal_server_gets_defaults() -> None:
    c = parse_server_config(
        'server { trust_domain = "td.test"  data_dir = "/var/lib/p" }\n'
        'plugins { NodeAttestor "join_token" {} }'
    )
    assert c.bind_address == "0.0.0.0"
    assert c.bind_port == 8081
    assert c.socket_path == Path("/tmp/plastron-server/private/api.sock")
    assert c.log_level == "INFO" and c.log_format == "text"
    assert c.ca_key_type is KeyType.EC_P256
    assert c.ca_ttl == dt.timedelta(hours=24)
    assert c.default_x509_svid_ttl == dt.timedelta(hours=1)
    assert c.default_jwt_svid_ttl == dt.timedelta(minutes=5)
    assert c.agent_ttl == dt.timedelta(hours=1)
    assert c.experimental.challenge_timeout == dt.timedelta(seconds=30)
    assert c.ratelimit.attestation and c.ratelimit.signing
    assert c.health_checks.live_path == "/live"
    # no DataStore block: the sql store with none of its settings given
    assert (c.datastore.name, dict(c.datastore.plugin_data)) == ("sql", {})
    assert _sqlite_file(c) == "/var/lib/p/datastore.sqlite3"
    assert c.key_manager is None


def _sqlite_file(c: ServerConfig) -> str | None:
    """The database file the configured sql store opens."""
    sql = sql_config(c.datastore, PluginContext(data_dir=c.data_dir, base_dir=c.config_dir))
    assert sql.database_type == "sqlite3"
    return to_driver_target(sql).url.database


def test_sql_datastore_without_connection_string_gets_sqlite_default() -> None:
    c = parse_server_config(
        'server { trust_domain = "td.test"  data_dir = "/d" }\n'
        'plugins { DataStore "sql" { plugin_data { } }\n NodeAttestor "join_token" {} }'
    )
    assert _sqlite_file(c) == "/d/datastore.sqlite3"


def test_a_disabled_datastore_block_gives_the_default() -> None:
    c = parse_server_config(
        'server { trust_domain = "td.test"  data_dir = "/d" }\n'
        'plugins { DataStore "sql" { plugin_data { database_type = "postgres" }\n'
        "  enabled = false }\n"
        ' NodeAttestor "join_token" {} }'
    )
    assert _sqlite_file(c) == "/d/datastore.sqlite3"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_server_config(tmp_path / "missing.conf", expand_env=False)
    bad = tmp_path / "bad.conf"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_agent_config(bad, expand_env=False)


def test_a_parse_error_does_not_disturb_the_next_parse() -> None:
    with pytest.raises(ConfigError, match="cannot parse configuration"):
        parse_server_config("server { trust_domain = ")
    c = load_server_config(DATA / "server.conf", expand_env=False)
    assert c.trust_domain.name == "example.org"
