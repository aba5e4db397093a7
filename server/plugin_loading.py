"""The server's plugins: which modules register them, and building the configured ones (the
DataStore, the UpstreamAuthority, the NodeAttestors) from config."""

from __future__ import annotations

from typing import Any

from plastron.attestors.base import ServerNodeAttestor
from plastron.attestors.join_token import NAME as JOIN_TOKEN
from plastron.clock import Clock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.datastore import DataStore
from plastron.host_services import HostServices
from plastron.plugins import (
    SHARED_PLUGIN_MODULES,
    PluginContext,
    Registries,
    Registry,
    check_enabled_plugins,
    load_plugins,
)
from plastron.server.config import ServerConfig
from plastron.upstream import UpstreamAuthority

# The modules whose register(registries) the server calls at start.
SERVER_PLUGIN_MODULES = (
    *SHARED_PLUGIN_MODULES,
    "plastron.hsm.upstream_plugin",
    "plastron.server.upstream.disk",
    "plastron.server.upstream.spire",
    "plastron.server.datastore.plugin",
)


def load_server_plugins() -> Registries:
    return load_plugins(SERVER_PLUGIN_MODULES)


def check_server_plugins(cfg: ServerConfig, registries: Registries) -> None:
    """Every enabled plugin of ``cfg`` is one this build has, with its extra installed, and its
    checker passes (every plugin_data key and value, the files it names; the DataStore's
    connection string's shape). Nothing is built, opened or created: this is what ``validate``
    checks and what ``run`` checks before opening anything."""
    context = plugin_context(cfg, registries)
    by_type: dict[str, Registry[Any]] = {
        "DataStore": registries.datastores,
        "KeyManager": registries.key_managers,
        "NodeAttestor": registries.server_node_attestors,
        "UpstreamAuthority": registries.upstream_authorities,
    }
    check_enabled_plugins(cfg.plugins, by_type, context)


def plugin_context(
    cfg: ServerConfig,
    registries: Registries,
    *,
    clock: Clock | None = None,
    services: HostServices | None = None,
) -> PluginContext:
    """The one context every server plugin is built with."""
    return registries.context(
        trust_domain=cfg.trust_domain,
        data_dir=cfg.data_dir,
        base_dir=cfg.config_dir,
        clock=clock,
        services=services,
    )


async def build_datastore(
    cfg: ServerConfig, registries: Registries, context: PluginContext
) -> DataStore:
    """Open the store the ``DataStore`` block names (the config reader supplies the default)."""
    open_store = registries.datastores.create(cfg.datastore, context)
    return await open_store()


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
