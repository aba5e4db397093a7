"""The agent's plugins and bootstrap trust, built from its configuration."""

from __future__ import annotations

import importlib
import logging
import ssl
import urllib.parse
import urllib.request

from cryptography import x509

from plastron.agent.config import AgentConfig
from plastron.agent.workloadattestor.base import WorkloadAttestor
from plastron.agent.workloadattestor.unix import UnixAttestorConfig, UnixWorkloadAttestor
from plastron.attestors.base import AgentNodeAttestor
from plastron.attestors.join_token import JoinTokenAgentAttestor
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, Unavailable
from plastron.keymanager import KeyManager
from plastron.plugins import AGENT_NODE_ATTESTORS, KEY_MANAGERS, PluginContext
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import load_pem_certificates

log = logging.getLogger("plastron.agent")
MAX_TRUST_BUNDLE_BYTES = 4 * 1024 * 1024

# Modules that register agent-side plugins (NodeAttestor halves, KeyManagers) when imported. A
# missing optional dependency (libtss2, a PKCS#11 module) disables that plugin, not the agent.
BUILTIN_PLUGIN_MODULES = (
    "plastron.attestors.x509pop.plugin",
    "plastron.tpm.plugin",
    "plastron.hsm.plugin",
)


def load_builtin_plugins() -> None:
    for name in BUILTIN_PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("plugin module unavailable module=%s error=%s", name, exc)


def _join_token(config: AgentConfig, flag: str | None) -> str | None:
    if flag:
        return flag
    if config.join_token:
        return config.join_token
    if config.join_token_file is not None:
        return config.join_token_file.read_text(encoding="ascii").strip()
    return None


def build_node_attestor(config: AgentConfig, join_token: str | None) -> AgentNodeAttestor:
    load_builtin_plugins()
    plugin = config.plugins.single("NodeAttestor")
    if plugin is None:
        raise ConfigError('plugins: a NodeAttestor is required (e.g. NodeAttestor "join_token")')
    if plugin.name == "join_token":
        token = _join_token(config, join_token)
        if not token:
            raise ConfigError("join_token attestation needs -joinToken or agent.join_token")
        return JoinTokenAgentAttestor(token)
    return AGENT_NODE_ATTESTORS.create(plugin, _context(config))


def build_workload_attestors(config: AgentConfig) -> list[WorkloadAttestor]:
    attestors: list[WorkloadAttestor] = []
    for plugin in config.plugins.of_type("WorkloadAttestor"):
        if plugin.name != "unix":
            raise ConfigError(f'unknown WorkloadAttestor "{plugin.name}"; known: unix')
        attestors.append(UnixWorkloadAttestor(UnixAttestorConfig.from_plugin_data(_data(plugin))))
    if not attestors:
        raise ConfigError('plugins: at least one WorkloadAttestor is required (e.g. "unix")')
    return attestors


def _data(plugin: PluginConfig) -> dict[str, object]:
    return dict(plugin.plugin_data)


def _context(config: AgentConfig) -> PluginContext:
    return PluginContext(
        trust_domain=config.trust_domain, data_dir=config.data_dir, base_dir=config.config_dir
    )


def build_key_manager(config: AgentConfig) -> KeyManager:
    load_builtin_plugins()
    plugin = config.key_manager
    if plugin is None:
        raise ConfigError('plugins: a KeyManager is required (e.g. KeyManager "disk")')
    return KEY_MANAGERS.create(plugin, _context(config))


def load_bootstrap_bundle(config: AgentConfig) -> list[x509.Certificate]:
    if config.insecure_bootstrap:
        log.warning("insecure_bootstrap: the server's certificate chain is NOT verified")
        return []
    if config.trust_bundle_path is not None:
        with config.trust_bundle_path.open("rb") as fh:
            data = fh.read(MAX_TRUST_BUNDLE_BYTES + 1)
        if len(data) > MAX_TRUST_BUNDLE_BYTES:
            raise ConfigError(f"trust_bundle_path {config.trust_bundle_path} is too large")
    elif config.trust_bundle_url is not None:
        data = fetch_trust_bundle_url(config.trust_bundle_url)
    else:
        raise ConfigError("agent: set trust_bundle_path, trust_bundle_url or insecure_bootstrap")
    if config.trust_bundle_format == "spiffe":
        return list(Bundle.from_jwks(config.trust_domain, data).x509_certificates())
    return list(load_pem_certificates(data, max_certs=1024))


def fetch_trust_bundle_url(url: str, *, timeout: float = 30.0) -> bytes:
    """Download the bootstrap bundle over HTTPS, verified with the system's web PKI roots
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` apply). Plain HTTP is refused: a bundle fetched
    without authentication would let anyone on the path choose the agent's trust roots."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ConfigError(f"trust_bundle_url must be an https:// URL, got {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json, */*"})  # noqa: S310
    context = ssl.create_default_context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            data: bytes = resp.read(MAX_TRUST_BUNDLE_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"trust_bundle_url {url}: download failed: {exc}") from None
    if len(data) > MAX_TRUST_BUNDLE_BYTES:
        raise ConfigError(
            f"trust_bundle_url {url}: bundle is larger than {MAX_TRUST_BUNDLE_BYTES} bytes"
        )
    return data
