"""The TPM plugins' factories and ``register``: NodeAttestor ``tpm`` and ``tpm_devid`` (server
and agent halves) and KeyManager ``tpm`` (agent)."""

from __future__ import annotations

from typing import Any

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, KeyManagerError
from plastron.keymanager import KeyManager
from plastron.plugins import PluginContext, Registries
from plastron.tpm import attestor, devid, openssl_provider
from plastron.tpm.tcti import DEFAULT_TCTI, Tcti


def _trust_domain(plugin: PluginConfig, context: PluginContext) -> Any:
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain")
    return context.trust_domain


def _tpm_server(plugin: PluginConfig, context: PluginContext) -> attestor.TpmServerAttestor:
    cfg = attestor.TpmServerConfig.from_settings(plugin.settings(), context)
    return attestor.TpmServerAttestor(cfg, _trust_domain(plugin, context), context.clock)


def _tpm_agent(plugin: PluginConfig, context: PluginContext) -> attestor.TpmAgentAttestor:
    cfg = attestor.TpmAgentConfig.from_settings(plugin.settings())
    return attestor.TpmAgentAttestor(cfg.tcti, cfg.ek_type)


def _devid_server(plugin: PluginConfig, context: PluginContext) -> devid.TpmDevidServerAttestor:
    cfg = devid.TpmDevidServerConfig.from_settings(plugin.settings(), context)
    return devid.TpmDevidServerAttestor(cfg, _trust_domain(plugin, context), context.clock)


def _devid_agent(plugin: PluginConfig, context: PluginContext) -> devid.TpmDevidAgentAttestor:
    cfg = devid.TpmDevidAgentConfig.from_settings(plugin.settings(), context)
    return devid.TpmDevidAgentAttestor(
        cfg.devid_cert_path, cfg.devid_priv_path, cfg.devid_pub_path, tcti=cfg.tcti
    )


def _check_tpm_server(plugin: PluginConfig, context: PluginContext) -> None:
    _tpm_server(plugin, context)  # reads and parses its files; opens nothing else


def _check_tpm_agent(plugin: PluginConfig, context: PluginContext) -> None:
    attestor.TpmAgentConfig.from_settings(plugin.settings())


def _check_devid_server(plugin: PluginConfig, context: PluginContext) -> None:
    _devid_server(plugin, context)  # reads and parses its files; opens nothing else


def _check_devid_agent(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings and the DevID files, read as the attestor reads them; no TPM is opened."""
    cfg = devid.TpmDevidAgentConfig.from_settings(plugin.settings(), context)
    devid.read_devid_files(cfg.devid_cert_path, cfg.devid_priv_path, cfg.devid_pub_path)


def _key_manager_tcti(plugin: PluginConfig, context: PluginContext) -> Tcti:
    """The KeyManager's settings, checked without opening the TPM."""
    settings = plugin.settings()
    tcti: str = settings.string("tcti", DEFAULT_TCTI)
    settings.finish()
    if context.data_dir is None:
        raise ConfigError(f"{plugin.path}: the tpm KeyManager needs the agent data_dir")
    parsed = Tcti.parse(tcti)
    # The agent's TLS handshakes are signed by the TPM through tpm2-openssl, which holds its
    # own connection to the TPM beside the agent's: both need a resource manager.
    if not parsed.resource_managed:
        raise ConfigError(
            f"{plugin.path}.plugin_data.tcti: {tcti!r} serves one client at a time, but the "
            "agent's TLS stack (tpm2-openssl) and the agent share the TPM; use a resource "
            "manager: device:/dev/tpmrm0 or tabrmd"
        )
    try:
        openssl_provider.check_available()
    except KeyManagerError as exc:
        raise ConfigError(f"{plugin.path}: {exc}") from None
    return parsed


def _check_key_manager(plugin: PluginConfig, context: PluginContext) -> None:
    _key_manager_tcti(plugin, context)


def _key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    parsed = _key_manager_tcti(plugin, context)
    assert context.data_dir is not None  # checked with the settings
    from plastron.tpm.keymanager import TpmKeyManager  # noqa: PLC0415  # agent only: tpm2-pytss

    return TpmKeyManager(context.data_dir, parsed)


def agent_plugin_tcti(plugin: PluginConfig, context: PluginContext) -> Tcti | None:
    """The TPM an agent plugin block talks to (NodeAttestor ``tpm`` or ``tpm_devid``,
    KeyManager ``tpm``), read from its settings without opening it; None for other plugins."""
    if plugin.type == "NodeAttestor" and plugin.name == attestor.NAME:
        return Tcti.parse(attestor.TpmAgentConfig.from_settings(plugin.settings()).tcti)
    if plugin.type == "NodeAttestor" and plugin.name == devid.NAME:
        return Tcti.parse(devid.TpmDevidAgentConfig.from_settings(plugin.settings(), context).tcti)
    if plugin.type == "KeyManager" and plugin.name == "tpm":
        return _key_manager_tcti(plugin, context)
    return None


def register(registries: Registries) -> None:
    # The server halves verify in pure Python; the agent halves and the KeyManager talk to a
    # TPM through tpm2-pytss, the [tpm] extra, imported only when one of them is built.
    servers, agents = registries.server_node_attestors, registries.agent_node_attestors
    servers.register(attestor.NAME, _tpm_server, check=_check_tpm_server)
    agents.register(attestor.NAME, _tpm_agent, extra="tpm", check=_check_tpm_agent)
    servers.register(devid.NAME, _devid_server, check=_check_devid_server)
    agents.register(devid.NAME, _devid_agent, extra="tpm", check=_check_devid_agent)
    registries.key_managers.register("tpm", _key_manager, extra="tpm", check=_check_key_manager)
