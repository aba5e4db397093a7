"""Both aws_iid halves' factories and ``register``."""

from __future__ import annotations

from plastron.attestors.aws_iid.agent import AwsIidAgentAttestor
from plastron.attestors.aws_iid.config import read_agent_config, read_server_config
from plastron.attestors.aws_iid.document import NAME
from plastron.attestors.aws_iid.server import AwsIidServerAttestor
from plastron.attestors.first_use import first_use_host
from plastron.configs.plugin_blocks import PluginConfig
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    read_server_config(plugin.settings(), context.base_dir)


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    read_agent_config(plugin.settings())


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> AwsIidServerAttestor:
    config = read_server_config(plugin.settings(), context.base_dir)
    trust_domain, attested = first_use_host(plugin, context)
    return AwsIidServerAttestor(config, trust_domain, context.clock, attested)


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> AwsIidAgentAttestor:
    return AwsIidAgentAttestor(read_agent_config(plugin.settings()))


def register(registries: Registries) -> None:
    # the server half needs asn1crypto and boto3 (the [cloud] extra); the agent half only HTTP
    registries.server_node_attestors.register(
        NAME, create_server_attestor, extra="cloud", check=check_server
    )
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_agent)
