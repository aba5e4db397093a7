"""The TPM plugins' factories and ``register``: NodeAttestor ``tpm`` and ``tpm_devid`` (server
and agent halves) and KeyManager ``tpm`` (agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, KeyManagerError
from plastron.keymanager import KeyManager
from plastron.plugins import PluginContext, Registries, check_plugin_data
from plastron.tpm import attestor, devid, openssl_provider
from plastron.tpm.tcti import DEFAULT_TCTI, Tcti

_PATH_KEYS = frozenset(
    {"endorsement_ca_path", "ek_hash_path", "pcr_policy_path", "devid_ca_path",
     "devid_cert_path", "devid_priv_path", "devid_pub_path"}
)  # fmt: skip


def _resolved(plugin: PluginConfig, context: PluginContext) -> dict[str, Any]:
    """plugin_data with relative file paths resolved against the config file's directory."""
    data = dict(plugin.plugin_data)
    for key in _PATH_KEYS & data.keys():
        value = data[key]
        if isinstance(value, str) and value and context.base_dir and not Path(value).is_absolute():
            data[key] = str(context.base_dir / value)
    return data


def _trust_domain(plugin: PluginConfig, context: PluginContext) -> Any:
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain")
    return context.trust_domain


def _tpm_server(plugin: PluginConfig, context: PluginContext) -> attestor.TpmServerAttestor:
    cfg = attestor.TpmServerConfig.from_plugin_data(_resolved(plugin, context))
    return attestor.TpmServerAttestor(cfg, _trust_domain(plugin, context), context.clock)


def _tpm_agent(plugin: PluginConfig, context: PluginContext) -> attestor.TpmAgentAttestor:
    cfg = attestor.TpmAgentConfig.from_plugin_data(plugin.plugin_data)
    return attestor.TpmAgentAttestor(cfg.tcti, cfg.ek_type)


def _devid_server(plugin: PluginConfig, context: PluginContext) -> devid.TpmDevidServerAttestor:
    cfg = devid.TpmDevidServerConfig.from_plugin_data(_resolved(plugin, context))
    return devid.TpmDevidServerAttestor(cfg, _trust_domain(plugin, context), context.clock)


def _devid_agent(plugin: PluginConfig, context: PluginContext) -> devid.TpmDevidAgentAttestor:
    cfg = devid.TpmDevidAgentConfig.from_plugin_data(_resolved(plugin, context))
    return devid.TpmDevidAgentAttestor(
        cfg.devid_cert_path, cfg.devid_priv_path, cfg.devid_pub_path, tcti=cfg.tcti
    )


def _key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    check_plugin_data(plugin, ("tcti",))
    if context.data_dir is None:
        raise ConfigError(f"{plugin.path}: the tpm KeyManager needs the agent data_dir")
    tcti = plugin.plugin_data.get("tcti", DEFAULT_TCTI)
    if not isinstance(tcti, str):
        raise ConfigError(f"{plugin.path}.plugin_data.tcti must be a string")
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
    from plastron.tpm.keymanager import TpmKeyManager  # noqa: PLC0415  # agent only: tpm2-pytss

    return TpmKeyManager(context.data_dir, parsed)


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(attestor.NAME, _tpm_server)
    registries.agent_node_attestors.register(attestor.NAME, _tpm_agent)
    registries.server_node_attestors.register(devid.NAME, _devid_server)
    registries.agent_node_attestors.register(devid.NAME, _devid_agent)
    registries.key_managers.register("tpm", _key_manager)
