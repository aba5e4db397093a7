"""Every key of SPIRE's server and agent configuration (the key sets of SPIRE's
cmd/spire-server/cli/run/run.go and cmd/spire-agent/cli/run/run.go, written here as data) is
either implemented, with the test that shows its behaviour, or refused with one line naming it.
Nothing SPIRE honours is accepted and then ignored."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from plastron.agent.config import parse_agent_config
from plastron.agent.plugin_loading import resolve_join_token
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.server.ca.config import ca_config
from plastron.server.config import parse_server_config
from plastron.server.plugin_loading import check_server_plugins, load_server_plugins

ROOT = Path(__file__).resolve().parents[3]
REFUSED = "refused"
# Accepted and wired by the telemetry/logging work of the same issue (metrics, log formats,
# audit log), whose behaviour tests land with it.
WIRED_BY_TELEMETRY = "telemetry"
LOG_FILES = "tests/integration/ops/test_log_files.py::test_server_json_and_agent_logfmt_files"
NODE_PRUNING = "tests/integration/server/test_node_pruning.py"

# SPIRE server { ... } keys: the behaviour test of each implemented one, or REFUSED.
SERVER_KEYS: dict[str, str] = {
    "admin_ids": "tests/integration/server/test_expired_caller_svid.py"
    "::test_expired_admin_and_downstream_svids_stop_authorizing",
    "agent_ttl": "tests/integration/agent/test_agent_rotation.py"
    "::test_svids_rotate_across_a_ca_rotation",
    "audit_log_enabled": "tests/integration/ops/test_audit_log.py"
    "::test_admin_calls_and_attestation_are_audited",
    "bind_address": "tests/integration/server/test_api.py"
    "::test_tcp_without_client_cert_cannot_use_admin_methods",
    "bind_port": "tests/integration/server/test_api.py"
    "::test_tcp_without_client_cert_cannot_use_admin_methods",
    "ca_key_type": "tests/unit/config/test_spire_keys.py::test_ca_settings_reach_the_ca",
    "ca_subject": "tests/unit/config/test_spire_keys.py::test_ca_settings_reach_the_ca",
    "ca_ttl": "tests/integration/agent/test_agent_rotation.py"
    "::test_svids_rotate_across_a_ca_rotation",
    "data_dir": "tests/e2e/test_server_files_private.py::test_every_file_in_data_dir_is_private",
    "default_x509_svid_ttl": "tests/integration/agent/test_agent_rotation.py"
    "::test_svids_rotate_across_a_ca_rotation",
    "default_jwt_svid_ttl": "tests/unit/config/test_spire_keys.py::test_ca_settings_reach_the_ca",
    "disable_jwt_svids": REFUSED,
    "experimental": "tests/integration/x509pop/test_x509pop_server_process.py",
    "federation": "tests/integration/federation/test_bundle_endpoint.py"
    "::test_endpoint_serves_the_bundle_authenticated_by_the_server_svid",
    "jwt_issuer": "tests/unit/ca/test_server_ca.py::test_jwt_svid_claims_and_exp_cap",
    "jwt_key_type": "tests/unit/config/test_spire_keys.py::test_ca_settings_reach_the_ca",
    "log_file": LOG_FILES,
    "log_level": "tests/integration/agent/test_run_override_flags.py"
    "::test_log_level_flag_over_the_file_sets_what_is_logged",
    "log_format": LOG_FILES,
    "log_source_location": REFUSED,
    "prune_attested_nodes_expired_for": NODE_PRUNING
    + "::test_prune_expired_for_in_batches_keeps_banned_and_tofu",
    "prune_attested_nodes_batch_size": NODE_PRUNING
    + "::test_prune_expired_for_in_batches_keeps_banned_and_tofu",
    "prune_tofu_nodes": NODE_PRUNING
    + "::test_prune_tofu_nodes_includes_join_token_agents_never_banned",
    "proxy_protocol_trusted_cidrs": REFUSED,
    "ratelimit": "tests/integration/attestation/test_parsers_fail_closed.py",
    "socket_path": "tests/integration/server/test_api.py::test_entry_crud_and_filters",
    "trust_domain": "tests/integration/server/test_api.py"
    "::test_entry_foreign_trust_domain_rejected",
    "max_attested_node_info_staleness": REFUSED,
    "profiling_enabled": REFUSED,
    "profiling_port": REFUSED,
    "profiling_freq": REFUSED,
    "profiling_names": REFUSED,
}
SERVER_EXPERIMENTAL_KEYS = (
    "agent_spiffe_id_as_selector",
    "auth_opa_policy_engine",
    "full_cache_reload_interval",
    "events_based_cache",
    "prune_events_older_than",
    "event_timeout",
    "sql_transaction_timeout",
    "require_pq_kem",
    "wit_key_type",
    "wit_issuer",
    "feature_flags",
    "named_pipe_name",
)
SERVER_PLUGIN_TYPES: dict[str, str] = {
    "DataStore": "tests/integration/datastore",
    "KeyManager": "tests/integration/hsm/test_pkcs11_plugin.py",
    "NodeAttestor": "tests/integration/x509pop/test_x509pop_server_process.py",
    "UpstreamAuthority": "tests/integration/hsm/test_pkcs11_upstream.py",
    "Notifier": REFUSED,
    "BundlePublisher": REFUSED,
    "CredentialComposer": REFUSED,
}

# SPIRE agent { ... } keys.
AGENT_KEYS: dict[str, str] = {
    "data_dir": "tests/integration/agent/test_agent_data_dir.py"
    "::test_agent_refuses_a_data_dir_others_can_reach",
    "admin_socket_path": "tests/integration/agent/test_agent_admin_socket.py::test_debug_getinfo",
    "insecure_bootstrap": "tests/integration/agent/test_agent_data_dir.py",
    "rebootstrap_mode": REFUSED,
    "rebootstrap_delay": REFUSED,
    "join_token": "tests/integration/agent/test_agent_e2e.py"
    "::test_workload_gets_verified_svids_and_restart_resumes",
    "join_token_file": "tests/unit/config/test_spire_keys.py::test_join_token_file_is_read",
    "log_file": LOG_FILES,
    "log_format": LOG_FILES,
    "log_level": WIRED_BY_TELEMETRY,
    "log_selectors": REFUSED,
    "log_source_location": REFUSED,
    "sds": "tests/unit/agent/test_sds_resources.py::test_configured_names",
    "server_address": "tests/integration/agent/test_agent_e2e.py"
    "::test_workload_gets_verified_svids_and_restart_resumes",
    "server_port": "tests/integration/agent/test_agent_e2e.py"
    "::test_workload_gets_verified_svids_and_restart_resumes",
    "socket_path": "tests/integration/agent/test_agent_workload_api.py"
    "::test_socket_permissions_let_any_local_user_connect",
    "disable_workload_api": REFUSED,
    "disable_sds_api": "tests/unit/agent/test_sds_resources.py",
    "workload_x509_svid_key_type": "tests/integration/agent/test_agent_settings_behaviour.py"
    "::test_spiffe_bootstrap_bundle_and_rsa_workload_keys",
    "trust_bundle_format": "tests/integration/agent/test_agent_settings_behaviour.py"
    "::test_spiffe_bootstrap_bundle_and_rsa_workload_keys",
    "trust_bundle_path": "tests/integration/agent/test_agent_e2e.py"
    "::test_workload_gets_verified_svids_and_restart_resumes",
    "trust_bundle_spiffe_workload_api": REFUSED,
    "trust_bundle_unix_socket": REFUSED,
    "trust_bundle_url": "tests/unit/agent/test_agent_bootstrap_url.py"
    "::test_downloads_over_verified_https",
    "trust_domain": "tests/integration/agent/test_agent_workload_api.py"
    "::test_x509_context_fetched_by_spiffe_client_verifies",
    "allow_unauthenticated_verifiers": REFUSED,
    "allowed_foreign_jwt_claims": REFUSED,
    "availability_target": REFUSED,
    # the bound's behaviour, on the cache the agent builds with these values
    "x509_svid_cache_max_size": "tests/unit/agent/test_agent_cache.py"
    "::test_lru_bound_evicts_unsubscribed_svids_first",
    "jwt_svid_cache_max_size": "tests/unit/agent/test_agent_cache.py::test_jwt_cache_is_bounded",
    "authorized_delegates": "tests/integration/agent/test_agent_admin_socket.py"
    "::test_non_delegates_are_refused",
    "profiling_enabled": REFUSED,
    "profiling_port": REFUSED,
    "profiling_freq": REFUSED,
    "profiling_names": REFUSED,
    "experimental": "tests/integration/x509pop/test_x509pop_agent_process.py"
    "::test_agent_process_attests_with_x509pop",
}
AGENT_EXPERIMENTAL_KEYS = (
    "jwt_svid_cache_hit_timeout",
    "named_pipe_name",
    "admin_named_pipe_name",
    "use_sync_authorized_entries",
    "require_pq_kem",
    "ratelimit",
    "broker",
    "feature_flags",
)
AGENT_PLUGIN_TYPES: dict[str, str] = {
    "KeyManager": "tests/e2e/tpm/test_tpm_keymanager_e2e.py",
    "NodeAttestor": "tests/integration/x509pop/test_x509pop_agent_process.py",
    "WorkloadAttestor": "tests/integration/agent/test_agent_caller_identity.py",
    "SVIDStore": REFUSED,
}

SERVER_BASE = {"trust_domain": '"example.org"', "data_dir": '"/srv/plastron"'}
AGENT_BASE = {
    "trust_domain": '"example.org"',
    "data_dir": '"/srv/plastron-agent"',
    "server_address": '"127.0.0.1"',
    "insecure_bootstrap": "true",
}
# A value each implemented key accepts (the base values cover the required keys).
SAMPLES = {
    "prune_attested_nodes_expired_for": '"24h"',
    "prune_attested_nodes_batch_size": "500",
    "prune_tofu_nodes": "true",
    "admin_ids": '["spiffe://example.org/admin"]',
    "admin_socket_path": '"/run/plastron-agent/admin.sock"',
    "authorized_delegates": '["spiffe://example.org/delegate"]',
    "agent_ttl": '"1h"',
    "audit_log_enabled": "true",
    "bind_address": '"127.0.0.1"',
    "bind_port": "8081",
    "ca_key_type": '"ec-p384"',
    "ca_subject": '{ country = ["DE"] organization = ["Acme"] common_name = "ca" }',
    "ca_ttl": '"24h"',
    "default_x509_svid_ttl": '"1h"',
    "default_jwt_svid_ttl": '"5m"',
    "experimental": "{}",
    "federation": "{ bundle_endpoint { port = 8443 } }",
    "jwt_issuer": '"https://oidc.example.org"',
    "jwt_key_type": '"rsa-2048"',
    "log_file": '"/tmp/plastron.log"',
    "log_level": '"debug"',
    "log_format": '"json"',
    "ratelimit": "{ attestation = false }",
    "socket_path": '"/tmp/plastron/api.sock"',
    "server_port": "8081",
    "join_token": '"abc"',
    "join_token_file": '"/run/token"',
    "sds": '{ default_svid_name = "x" }',
    "disable_sds_api": "true",
    "workload_x509_svid_key_type": '"rsa-2048"',
    "trust_bundle_format": '"spiffe"',
    "x509_svid_cache_max_size": "10",
    "jwt_svid_cache_max_size": "10",
}


def _document(section: str, base: dict[str, str], key: str, value: str, plugins: str) -> str:
    body = dict(base)
    body[key] = value
    if key == "insecure_bootstrap":
        body[key] = "true"
    if key in ("trust_bundle_path", "trust_bundle_url"):
        del body["insecure_bootstrap"]
    if key == "join_token_file":
        body.pop("join_token", None)
    if key in ("prune_attested_nodes_batch_size", "prune_tofu_nodes") and value != '"x"':
        body["prune_attested_nodes_expired_for"] = '"24h"'  # they apply only with it
    lines = "\n".join(f"  {k} = {v}" for k, v in body.items())
    return f"{section} {{\n{lines}\n}}\nplugins {{\n{plugins}\n}}\n"


SERVER_PLUGINS = '  NodeAttestor "join_token" { plugin_data {} }'
AGENT_PLUGINS = SERVER_PLUGINS

Parse = Callable[[str], object]


def _sample(key: str) -> str:
    if key == "trust_bundle_path":
        return '"/etc/plastron/bundle.pem"'
    if key == "trust_bundle_url":
        return '"https://bundle.example.org/b.pem"'
    return SAMPLES.get(key, SERVER_BASE.get(key) or AGENT_BASE.get(key, '"x"'))


def _test_exists(reference: str) -> bool:
    """Whether ``path[::test_name]`` names a test file (or folder) and function in this repo."""
    path, _, name = reference.partition("::")
    target = ROOT / path
    if not target.exists():
        return False
    if not name:
        return True  # a whole file or folder of tests of this key
    tree = ast.parse(target.read_text())
    defined = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return name in defined


def _cases() -> list[tuple[str, str, str, Parse, str, str]]:
    cases: list[tuple[str, str, str, Parse, str, str]] = []
    for key, behaviour in SERVER_KEYS.items():
        cases.append(("server", key, behaviour, parse_server_config, "server", key))
    for key, behaviour in AGENT_KEYS.items():
        cases.append(("agent", key, behaviour, parse_agent_config, "agent", key))
    return cases


@pytest.mark.parametrize(
    ("section", "key", "behaviour", "parse", "where_section", "where_key"),
    _cases(),
    ids=[f"{c[0]}.{c[1]}" for c in _cases()],
)
def test_each_spire_key_is_implemented_or_refused(
    section: str,
    key: str,
    behaviour: str,
    parse: Parse,
    where_section: str,
    where_key: str,
) -> None:
    base = SERVER_BASE if section == "server" else AGENT_BASE
    plugins = SERVER_PLUGINS if section == "server" else AGENT_PLUGINS
    if behaviour == REFUSED:
        text = _document(section, base, key, '"x"', plugins)
        with pytest.raises(ConfigError) as refused:
            parse(text)
        assert str(refused.value) == f"not supported by Plastron: {where_section}.{where_key}"
        return
    parse(_document(section, base, key, _sample(key), plugins))
    if behaviour != WIRED_BY_TELEMETRY:
        assert _test_exists(behaviour), f"{section}.{key}: no test {behaviour}"


def test_spire_experimental_cache_reload_interval_is_implemented() -> None:
    """The one SPIRE server ``experimental`` key Plastron implements (the entry cache's poll)."""
    text = _document(
        "server", SERVER_BASE, "experimental", '{ cache_reload_interval = "2s" }', SERVER_PLUGINS
    )
    assert parse_server_config(text).experimental.cache_reload_interval.total_seconds() == 2
    behaviour = "tests/integration/server/test_cache_reload_interval.py"
    assert _test_exists(f"{behaviour}::test_a_long_interval_keeps_it_out_until_the_next_poll")


@pytest.mark.parametrize(
    ("section", "key", "parse"),
    [("server", k, parse_server_config) for k in SERVER_EXPERIMENTAL_KEYS]
    + [("agent", k, parse_agent_config) for k in AGENT_EXPERIMENTAL_KEYS],
)
def test_spire_experimental_keys_are_refused(section: str, key: str, parse: Parse) -> None:
    base = SERVER_BASE if section == "server" else AGENT_BASE
    text = _document(section, base, "experimental", f'{{ {key} = "x" }}', SERVER_PLUGINS)
    with pytest.raises(ConfigError) as refused:
        parse(text)
    assert str(refused.value) == f"not supported by Plastron: {section}.experimental.{key}"


@pytest.mark.parametrize(
    ("section", "plugin_type", "behaviour", "parse"),
    [("server", t, b, parse_server_config) for t, b in SERVER_PLUGIN_TYPES.items()]
    + [("agent", t, b, parse_agent_config) for t, b in AGENT_PLUGIN_TYPES.items()],
)
def test_each_spire_plugin_type_is_implemented_or_refused(
    section: str, plugin_type: str, behaviour: str, parse: Parse
) -> None:
    base = SERVER_BASE if section == "server" else AGENT_BASE
    plugins = f'{SERVER_PLUGINS}\n  {plugin_type} "some" {{ enabled = false plugin_data {{}} }}'
    text = _document(section, base, "trust_domain", '"example.org"', plugins)
    if behaviour == REFUSED:
        with pytest.raises(ConfigError) as refused:
            parse(text)
        assert str(refused.value) == f"not supported by Plastron: plugins.{plugin_type}"
        return
    if plugin_type != "NodeAttestor":
        parse(text)
    assert _test_exists(behaviour), f"{plugin_type}: no test {behaviour}"


def test_the_tables_cover_every_key_the_readers_accept() -> None:
    """A key Plastron reads but the tables above do not list would escape this walk."""
    for key in SAMPLES:
        assert key in SERVER_KEYS or key in AGENT_KEYS, key


def test_ca_settings_reach_the_ca() -> None:
    """The CA keys of server {} become the CA's settings (the CA's own tests show each
    setting's effect on what it signs)."""
    text = _document(
        "server",
        {
            **SERVER_BASE,
            "ca_key_type": '"ec-p384"',
            "jwt_key_type": '"rsa-2048"',
            "ca_subject": SAMPLES["ca_subject"],
            "default_jwt_svid_ttl": '"90s"',
            "jwt_issuer": '"https://oidc.example.org"',
        },
        "ca_ttl",
        '"48h"',
        SERVER_PLUGINS,
    )
    ca = ca_config(parse_server_config(text))
    assert ca.ca_key_type is KeyType.EC_P384 and ca.jwt_key_type is KeyType.RSA_2048
    assert ca.default_jwt_svid_ttl.total_seconds() == 90
    assert ca.ca_ttl.total_seconds() == 48 * 3600
    assert ca.jwt_issuer == "https://oidc.example.org"
    assert ca.ca_subject is not None
    names = {a.oid: a.value for a in ca.ca_subject}
    assert names == {
        NameOID.COUNTRY_NAME: "DE",
        NameOID.ORGANIZATION_NAME: "Acme",
        NameOID.COMMON_NAME: "ca",
    }


def test_join_token_file_is_read(tmp_path: Path) -> None:
    """join_token_file's content is the token the join_token attestor presents."""
    token_file = tmp_path / "token"
    token_file.write_text("3f1c2b\n")
    base = {k: v for k, v in AGENT_BASE.items()}
    text = _document("agent", base, "join_token_file", f'"{token_file}"', AGENT_PLUGINS)
    assert resolve_join_token(parse_agent_config(text), None) == "3f1c2b"


def test_spire_read_only_replica_is_refused() -> None:
    """SPIRE's ro_connection_string would be ignored (one pool): refused by name."""
    plugins = (
        f"{SERVER_PLUGINS}\n"
        '  DataStore "sql" { plugin_data { database_type = "sqlite3"'
        ' ro_connection_string = "/tmp/replica.db" } }'
    )
    config = parse_server_config(_document("server", SERVER_BASE, "bind_port", "8081", plugins))
    with pytest.raises(ConfigError) as refused:
        check_server_plugins(config, load_server_plugins())
    assert str(refused.value) == (
        "not supported by Plastron: plugins.DataStore.sql.plugin_data.ro_connection_string"
    )
