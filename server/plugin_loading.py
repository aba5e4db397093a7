"""The server's plugins: which modules register them, and building the configured ones (the
datastore settings, the UpstreamAuthority, the NodeAttestors) from config."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

from plastron.attestors.base import ServerNodeAttestor
from plastron.attestors.join_token import NAME as JOIN_TOKEN
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.extras import require_extra
from plastron.plugins import PluginContext, Registries, Registry, load_plugins
from plastron.server.config import DEFAULT_DATASTORE, ServerConfig
from plastron.server.datastore.config import DEFAULT_DATABASE_TYPE, DatabaseType, SqlConfig
from plastron.upstream import UpstreamAuthority

# The modules whose register(registries) the server calls at start. None imports an optional
# dependency: a plugin that needs one names its extra (plastron.extras), checked when it is
# configured.
SERVER_PLUGIN_MODULES = (
    "plastron.keymanager_plugins",
    "plastron.attestors.join_token",
    "plastron.attestors.x509pop.plugin",
    "plastron.attestors.gcp_iit.plugin",
    "plastron.attestors.aws_iid.plugin",
    "plastron.attestors.azure_msi.plugin",
    "plastron.tpm.plugin",
    "plastron.hsm.plugin",
    "plastron.hsm.upstream_plugin",
    "plastron.server.upstream.disk",
)

# The pip extra holding each database's driver (SQLite's is in the standard library).
DATABASE_EXTRAS: dict[str, str] = {"postgres": "postgres", "mysql": "mysql"}

# SPIRE's read-only replica string: accepted so SPIRE configs load, not used (one pool).
_UNUSED_SQL_KEYS = ("ro_connection_string",)


def load_server_plugins() -> Registries:
    return load_plugins(SERVER_PLUGIN_MODULES)


def check_server_plugins(cfg: ServerConfig, registries: Registries) -> None:
    """Every enabled plugin of ``cfg`` that Plastron builds is one this build has, with its
    extra installed, and the datastore settings are valid. Nothing is built, opened or created:
    this is what ``validate`` checks and what ``run`` checks before opening anything."""
    datastore_config(cfg)
    by_type: dict[str, Registry[Any]] = {
        "KeyManager": registries.key_managers,
        "NodeAttestor": registries.server_node_attestors,
        "UpstreamAuthority": registries.upstream_authorities,
    }
    for plugin in cfg.plugins:
        registry = by_type.get(plugin.type)
        if registry is not None and plugin.enabled:
            registry.check(plugin)


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
    settings = plugin.settings()
    defaults = SqlConfig
    database_type = cast(
        DatabaseType,
        settings.choice("database_type", DEFAULT_DATABASE_TYPE, ("sqlite3", "postgres", "mysql")),
    )
    extra = DATABASE_EXTRAS.get(database_type)
    if extra is not None:
        require_extra(extra, f'DataStore "sql" with database_type "{database_type}"')
    config = SqlConfig(
        database_type=database_type,
        connection_string=settings.string("connection_string", ""),
        data_dir=str(cfg.data_dir),
        max_open_conns=settings.integer("max_open_conns", defaults.max_open_conns, 1),
        max_idle_conns=settings.integer("max_idle_conns", defaults.max_idle_conns),
        conn_max_lifetime=int(
            settings.duration(
                "conn_max_lifetime",
                dt.timedelta(seconds=defaults.conn_max_lifetime),
                positive=False,
            ).total_seconds()
        ),
        disable_migration=settings.boolean("disable_migration", defaults.disable_migration),
        root_ca_path=_file_path(cfg, settings.string("root_ca_path", "")),
        client_cert_path=_file_path(cfg, settings.string("client_cert_path", "")),
        client_key_path=_file_path(cfg, settings.string("client_key_path", "")),
    )
    for key in _UNUSED_SQL_KEYS:
        settings.raw(key)
    settings.finish()
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
