"""Building the server's plugins from config: datastore settings, UpstreamAuthority, and the
import of built-in plugin modules (each registers itself with its registry on import)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from plastron.configs.duration import parse_duration
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import UPSTREAM_AUTHORITIES, PluginContext, check_plugin_data
from plastron.server.config import DEFAULT_DATASTORE, ServerConfig
from plastron.server.datastore.config import DEFAULT_DATABASE_TYPE, SqlConfig
from plastron.server.upstream.disk import DiskUpstreamAuthority, DiskUpstreamConfig
from plastron.upstream import UpstreamAuthority

log = logging.getLogger(__name__)

# Modules that register server-side plugins when imported. A missing optional dependency
# (e.g. libtss2 for the TPM attestor) disables that plugin with a log line, not the server.
BUILTIN_PLUGIN_MODULES = (
    "plastron.attestors.x509pop.plugin",
    "plastron.tpm.plugin",
    "plastron.hsm.plugin",
    "plastron.hsm.upstream",
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


def load_builtin_plugins() -> None:
    for name in BUILTIN_PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that plugin is not part of this build
            log.warning("plugin module unavailable module=%s error=%s", name, exc)
        except ImportError as exc:
            log.warning("plugin module unavailable module=%s error=%s", name, exc)


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


def _disk_upstream(plugin: PluginConfig, context: PluginContext) -> UpstreamAuthority:
    check_plugin_data(plugin, ("cert_file_path", "key_file_path", "bundle_file_path"))
    data = plugin.plugin_data

    def path(key: str, required: bool) -> Path | None:
        value: Any = data.get(key)
        if value is None:
            if required:
                raise ConfigError(f"{plugin.path}.plugin_data.{key} is required")
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{plugin.path}.plugin_data.{key} must be a non-empty string")
        return context.resolve(value)

    cert, key = path("cert_file_path", True), path("key_file_path", True)
    assert cert is not None and key is not None
    assert context.trust_domain is not None
    return DiskUpstreamAuthority(
        DiskUpstreamConfig(cert, key, path("bundle_file_path", False)),
        trust_domain=context.trust_domain,
        clock=context.clock,
    )


UPSTREAM_AUTHORITIES.register("disk", _disk_upstream)


def build_upstream(cfg: ServerConfig, context: PluginContext) -> UpstreamAuthority | None:
    plugin = cfg.plugins.single("UpstreamAuthority")
    if plugin is None:
        return None
    return UPSTREAM_AUTHORITIES.create(plugin, context)
