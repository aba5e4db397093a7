"""Both gcp_iit halves' factories and ``register``."""

from __future__ import annotations

from plastron.attestors.first_use import first_use_host
from plastron.attestors.gcp_iit.agent import GcpIitAgentAttestor
from plastron.attestors.gcp_iit.compute import ComputeClient, ServiceAccount
from plastron.attestors.gcp_iit.config import GcpIitAgentConfig, GcpIitServerConfig
from plastron.attestors.gcp_iit.server import GcpIitServerAttestor
from plastron.attestors.gcp_iit.token import NAME
from plastron.attestors.jwks_source import FileKeySource, open_key_source
from plastron.configs.plugin_blocks import PluginConfig
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings, the JWKS file and the service account key file; no network."""
    settings = plugin.settings()
    config = GcpIitServerConfig.from_settings(settings, base_dir=context.base_dir)
    if config.jwks_file is not None:
        FileKeySource(config.jwks_file, method=NAME, where=settings.where("jwks_file"))
    if config.use_instance_metadata:
        assert config.service_account_file is not None
        ServiceAccount.load(config.service_account_file, settings.where("service_account_file"))


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    GcpIitAgentConfig.from_settings(plugin.settings())


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> GcpIitServerAttestor:
    settings = plugin.settings()
    config = GcpIitServerConfig.from_settings(settings, base_dir=context.base_dir)
    trust_domain, attested = first_use_host(plugin, context)
    keys = open_key_source(
        config.jwks_url, config.jwks_file, method=NAME, clock=context.clock,
        where=settings.where("jwks_file"),
    )  # fmt: skip
    compute = None
    if config.use_instance_metadata:
        assert config.service_account_file is not None
        account = ServiceAccount.load(
            config.service_account_file, settings.where("service_account_file")
        )
        compute = ComputeClient(config.compute_endpoint, account, context.clock)
    return GcpIitServerAttestor(
        config, trust_domain, context.clock, keys=keys, attested=attested, compute=compute
    )


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> GcpIitAgentAttestor:
    return GcpIitAgentAttestor(GcpIitAgentConfig.from_settings(plugin.settings()))


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(NAME, create_server_attestor, check=check_server)
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_agent)
