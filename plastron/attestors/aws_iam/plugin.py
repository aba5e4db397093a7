"""Both aws_iam halves' factories and ``register``. The agent half signs with botocore (the
``[cloud]`` extra); the server half needs only the standard library."""

from __future__ import annotations

from plastron.attestors.aws_iam.agent import AwsIamAgentAttestor
from plastron.attestors.aws_iam.config import NAME, AwsIamAgentConfig, AwsIamServerConfig
from plastron.attestors.aws_iam.server import AwsIamServerAttestor
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings only; no STS call."""
    AwsIamServerConfig.from_settings(plugin.settings())


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings only; credentials are looked up at each attestation."""
    AwsIamAgentConfig.from_settings(plugin.settings())


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> AwsIamServerAttestor:
    config = AwsIamServerConfig.from_settings(plugin.settings())
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain")
    return AwsIamServerAttestor(config, context.trust_domain, context.clock)


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> AwsIamAgentAttestor:
    return AwsIamAgentAttestor(AwsIamAgentConfig.from_settings(plugin.settings()))


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(NAME, create_server_attestor, check=check_server)
    registries.agent_node_attestors.register(
        NAME, create_agent_attestor, extra="cloud", check=check_agent
    )
