"""Both x509pop halves' factories and ``register``. Each factory reads its ``plugin_data``
and builds the half."""

from __future__ import annotations

from plastron.attestors.x509pop.agent import (
    X509PopAgentAttestor,
    check_key_matches,
    load_chain,
    load_file_key,
)
from plastron.attestors.x509pop.config import (
    X509PopAgentConfig,
    X509PopServerConfig,
)
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.attestors.x509pop.wire import NAME
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, PlastronError
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    X509PopServerConfig.from_settings(plugin.settings(), base_dir=context.base_dir)


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings and files, read as the attestor reads them at start (the chain, the key
    file and that they match); a private_key_uri is opened only by the factory (it may log in
    to a token)."""
    config = X509PopAgentConfig.from_settings(plugin.settings(), base_dir=context.base_dir)
    chain = load_chain(config)
    if config.private_key_path is not None:
        check_key_matches(load_file_key(config.private_key_path), chain[0])


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> X509PopServerAttestor:
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain")
    config = X509PopServerConfig.from_settings(plugin.settings(), base_dir=context.base_dir)
    # mode spiffe trusts the server's own X.509 authorities, which the server passes here
    bundle = context.services.x509_authorities
    if config.mode == "spiffe" and bundle is None:
        raise ConfigError(
            f"{plugin.path}: mode spiffe needs the server's trust bundle, which this build "
            "does not pass to plugins"
        )
    return X509PopServerAttestor(
        config,
        context.trust_domain,
        context.clock,
        trust_bundle=bundle if config.mode == "spiffe" else None,
    )


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> X509PopAgentAttestor:
    config = X509PopAgentConfig.from_settings(plugin.settings(), base_dir=context.base_dir)
    key = None
    if config.private_key_uri is not None:
        # the room that owns the URI scheme (hsm, for pkcs11:) opens the key
        try:
            key = context.open_key_uri(config.private_key_uri)
        except PlastronError as exc:
            raise ConfigError(f"x509pop: private_key_uri: {exc}") from None
    return X509PopAgentAttestor(config, key=key)


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(NAME, create_server_attestor, check=check_server)
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_agent)
