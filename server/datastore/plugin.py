"""The ``sql`` DataStore plugin: its ``plugin_data`` (SPIRE's keys) and ``register``.

With no ``DataStore`` block the server configures ``DataStore "sql" {}``, which is SQLite at
``<data_dir>/datastore.sqlite3``: the defaults below and in :class:`SqlConfig` are the only
place that is said.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plastron.configs.plugin_blocks import PluginConfig
from plastron.configs.unsupported import refuse_unsupported
from plastron.errors import ConfigError
from plastron.extras import require_extra
from plastron.plugins import PluginContext, Registries
from plastron.server.datastore.config import (
    DEFAULT_DATABASE_TYPE,
    DatabaseType,
    SqlConfig,
    to_driver_target,
)
from plastron.server.datastore.store import SqlDataStore, open_datastore
from plastron.server.datastore.token_key import load_or_create_join_token_key

NAME = "sql"
DATABASE_TYPES = ("sqlite3", "postgres", "mysql")
# The pip extra holding each database's driver (SQLite's is in the standard library).
DATABASE_EXTRAS: dict[str, str] = {"postgres": "postgres", "mysql": "mysql"}
# SPIRE's read-only replica: Plastron reads and writes through one pool, so a replica string
# would be accepted and then ignored; it is refused by name instead.
_UNSUPPORTED_KEYS = ("ro_connection_string",)


def sql_config(plugin: PluginConfig, context: PluginContext) -> SqlConfig:
    """The store's settings. The TLS file paths resolve from the config file's directory, as
    every plugin's; ``connection_string`` is passed on as written (a relative SQLite path is
    taken from the working directory, as SPIRE does)."""
    settings = plugin.settings()
    defaults = SqlConfig

    def file_path(key: str) -> str:
        text: str = settings.string(key, "")
        return str(context.resolve(text)) if text else ""

    database_type = settings.choice("database_type", DEFAULT_DATABASE_TYPE, DATABASE_TYPES)
    extra = DATABASE_EXTRAS.get(database_type)
    if extra is not None:
        require_extra(extra, f'DataStore "sql" with database_type "{database_type}"')
    config = SqlConfig(
        database_type=cast(DatabaseType, database_type),
        connection_string=settings.string("connection_string", ""),
        data_dir=str(context.data_dir or ""),
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
        root_ca_path=file_path("root_ca_path"),
        client_cert_path=file_path("client_cert_path"),
        client_key_path=file_path("client_key_path"),
    )
    refuse_unsupported(settings, _UNSUPPORTED_KEYS)
    settings.finish()
    config.validate()
    return config


def create_sql_datastore(
    plugin: PluginConfig, context: PluginContext
) -> Callable[[], Awaitable[SqlDataStore]]:
    """Check the settings now; the opener connects and migrates, and stores join tokens under
    the key in ``<data_dir>`` (made at the first start)."""
    config = sql_config(plugin, context)
    data_dir, clock = context.data_dir, context.clock
    if data_dir is None:
        raise ConfigError(f"{plugin.path}: the server's data_dir is needed (join-token key)")

    async def open_store() -> SqlDataStore:
        hasher = load_or_create_join_token_key(data_dir)
        return await open_datastore(config, clock=clock, token_hasher=hasher)

    return open_store


def _check_tls_files(config: SqlConfig) -> None:
    """MySQL's TLS files (the only driver given them) are readable PEM: the driver reads them
    at the first connection, where a bad one fails after data_dir was made."""
    pem_files = (
        ("root_ca_path", config.root_ca_path, x509.load_pem_x509_certificates),
        ("client_cert_path", config.client_cert_path, x509.load_pem_x509_certificates),
        ("client_key_path", config.client_key_path, _load_unencrypted_key),
    )
    for key, path, parse in pem_files:
        if not path:
            continue
        try:
            parse(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(
                f'DataStore "sql": cannot read {key} {path!r}: {exc.strerror}'
            ) from None
        except (ValueError, TypeError):
            raise ConfigError(
                f'DataStore "sql": {key} {path!r} is not PEM the driver can use'
            ) from None


def _load_unencrypted_key(data: bytes) -> object:
    return serialization.load_pem_private_key(data, password=None)


def check_sql_datastore(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings, the connection string's shape and MySQL's TLS files; no connection."""
    config = sql_config(plugin, context)
    to_driver_target(config)
    if config.database_type == "mysql":
        _check_tls_files(config)


def register(registries: Registries) -> None:
    registries.datastores.register(NAME, create_sql_datastore, check=check_sql_datastore)
