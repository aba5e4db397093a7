"""Both azure_msi halves' factories and ``register``."""

from __future__ import annotations

from plastron.attestors.azure_msi.agent import AzureMsiAgentAttestor
from plastron.attestors.azure_msi.arm import ArmClient
from plastron.attestors.azure_msi.config import AzureMsiAgentConfig, AzureMsiServerConfig
from plastron.attestors.azure_msi.server import AzureMsiServerAttestor
from plastron.attestors.azure_msi.token import NAME
from plastron.attestors.first_use import first_use_host
from plastron.attestors.jwks_source import FileKeySource, open_key_source
from plastron.configs.plugin_blocks import PluginConfig
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings and the JWKS file; no network."""
    settings = plugin.settings()
    config = AzureMsiServerConfig.from_settings(settings, base_dir=context.base_dir)
    if config.jwks_file is not None:
        FileKeySource(config.jwks_file, method=NAME, where=settings.where("jwks_file"))


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    AzureMsiAgentConfig.from_settings(plugin.settings())


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> AzureMsiServerAttestor:
    settings = plugin.settings()
    config = AzureMsiServerConfig.from_settings(settings, base_dir=context.base_dir)
    trust_domain, attested = first_use_host(plugin, context)
    keys = open_key_source(
        config.jwks_url, config.jwks_file, method=NAME, clock=context.clock,
        where=settings.where("jwks_file"),
    )  # fmt: skip
    clients = {
        key: ArmClient(
            tenant,
            endpoint=config.resource_manager_endpoint,
            authority=config.authority_endpoint,
            metadata=config.metadata_endpoint,
            clock=context.clock,
        )
        for key, tenant in config.tenants.items()
    }
    return AzureMsiServerAttestor(
        config, trust_domain, context.clock, keys=keys, attested=attested, clients=clients
    )


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> AzureMsiAgentAttestor:
    return AzureMsiAgentAttestor(AzureMsiAgentConfig.from_settings(plugin.settings()))


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(NAME, create_server_attestor, check=check_server)
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_agent)
