"""The server's plugins: which modules register them, and building the configured ones (the
datastore settings, the UpstreamAuthority, the NodeAttestors) from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plastron.attestors.base import ServerNodeAttestor
from plastron.attestors.join_token import NAME as JOIN_TOKEN
from plastron.configs.duration import parse_duration
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, Registries, check_plugin_data, load_plugins
from plastron.server.config import DEFAULT_DATASTORE, ServerConfig
from plastron.server.datastore.config import DEFAULT_DATABASE_TYPE, SqlConfig
from plastron.upstream import UpstreamAuthority

# The modules whose register(registries) the server calls at start. A missing optional
# dependency (e.g. libtss2 for the TPM attestor) disables that plugin with a log line.
SERVER_PLUGIN_MODULES = (
    "plastron.keymanager_plugins",
    "plastron.attestors.join_token",
    "plastron.attestors.x509pop.plugin",
    "plastron.tpm.plugin",
    "plastron.hsm.plugin",
    "plastron.hsm.upstream",
    "plastron.server.upstream.disk",
)

_SQL_KEYS = (
    "database_type",
    "connection_string",
    "ro_connection_string",
    "max_open_conns",
    "max_idle_conns",
    "conn_max_lifetime",
    "disable_migration",
    "root_ca_path",
    "client_cert_path",
    "client_key_path",
)


def load_server_plugins() -> Registries:
    return load_plugins(SERVER_PLUGIN_MODULES)


def _int(plugin: PluginConfig, key: str, default: int) -> int:
    value = plugin.plugin_data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{plugin.path}.plugin_data.{key} must be an integer")
    return value


def _file_path(cfg: ServerConfig, value: Any) -> str:
    """A file path from the DataStore's plugin_data, relative ones from the config's directory
    (as every plugin's); the connection_string itself is passed on as written."""
    text = str(value)
    if text and cfg.config_dir is not None and not Path(text).is_absolute():
        return str(cfg.config_dir / text)
    return text


def datastore_config(cfg: ServerConfig) -> SqlConfig:
    plugin = cfg.datastore  # the config reader supplies the default one
    if plugin.name != DEFAULT_DATASTORE:
        raise ConfigError(f'unknown DataStore "{plugin.name}"; known: sql')
    check_plugin_data(plugin, _SQL_KEYS)
    data = plugin.plugin_data
    db_type = data.get("database_type", DEFAULT_DATABASE_TYPE)
    if db_type not in ("sqlite3", "postgres", "mysql"):
        raise ConfigError(
            f"{plugin.path}.plugin_data.database_type must be sqlite3, postgres or mysql, "
            f"got {db_type!r}"
        )
    lifetime = data.get("conn_max_lifetime")
    config = SqlConfig(
        database_type=db_type,
        connection_string=str(data.get("connection_string", "")),
        data_dir=str(cfg.data_dir),
        max_open_conns=_int(plugin, "max_open_conns", 100),
        max_idle_conns=_int(plugin, "max_idle_conns", 100),
        conn_max_lifetime=(
            int(
                parse_duration(
                    lifetime, f"{plugin.path}.plugin_data.conn_max_lifetime"
                ).total_seconds()
            )
            if lifetime is not None
            else 0
        ),
        disable_migration=bool(data.get("disable_migration", False)),
        root_ca_path=_file_path(cfg, data.get("root_ca_path", "")),
        client_cert_path=_file_path(cfg, data.get("client_cert_path", "")),
        client_key_path=_file_path(cfg, data.get("client_key_path", "")),
    )
    config.validate()
    return config


def build_upstream(
    cfg: ServerConfig, registries: Registries, context: PluginContext
) -> UpstreamAuthority | None:
    plugin = cfg.plugins.single("UpstreamAuthority")
    if plugin is None:
        return None
    return registries.upstream_authorities.create(plugin, context)


def build_node_attestors(
    cfg: ServerConfig, registries: Registries, context: PluginContext
) -> dict[str, ServerNodeAttestor]:
    """Every configured NodeAttestor by name, and join_token whether configured or not: as in
    SPIRE, a server accepts the join tokens it issues."""
    configured = {p.name: p for p in cfg.plugins.of_type("NodeAttestor")}
    plugins = [configured.pop(JOIN_TOKEN, PluginConfig("NodeAttestor", JOIN_TOKEN))]
    plugins += configured.values()
    return {p.name: registries.server_node_attestors.create(p, context) for p in plugins}
