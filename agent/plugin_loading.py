"""The agent's plugins and bootstrap trust, built from its configuration."""

from __future__ import annotations

import logging
import ssl
import urllib.parse
import urllib.request
from functools import cache
from typing import Any

from cryptography import x509

from plastron.agent.config import AgentConfig
from plastron.attestors.base import AgentNodeAttestor
from plastron.errors import ConfigError, Unavailable
from plastron.files import check_private_dir
from plastron.host_services import HostServices
from plastron.keymanager import KeyManager
from plastron.logs import check_log_file
from plastron.plugins import (
    SHARED_PLUGIN_MODULES,
    PluginContext,
    Registries,
    Registry,
    check_enabled_plugins,
    load_plugins,
)
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import load_pem_certificates
from plastron.workloadattestor import WorkloadAttestor

log = logging.getLogger("plastron.agent")
MAX_TRUST_BUNDLE_BYTES = 4 * 1024 * 1024

# The modules whose register(registries) the agent calls at start.
AGENT_PLUGIN_MODULES = (
    *SHARED_PLUGIN_MODULES,
    "plastron.agent.workloadattestor.unix",
    "plastron.agent.workloadattestor.docker",
    "plastron.agent.workloadattestor.k8s",
    "plastron.agent.workloadattestor.systemd",
)


@cache
def agent_plugins() -> Registries:
    """The agent's registries, loaded once per process."""
    return load_plugins(AGENT_PLUGIN_MODULES)


def check_agent_plugins(config: AgentConfig) -> None:
    """Every enabled plugin of ``config`` is one this build has, with its extra installed, and
    its checker passes (every plugin_data key and value, the files it names); the join token
    file and the bootstrap bundle file are readable, log_file can be opened, and an existing
    data_dir is private.
    Nothing is built, opened or created: this is what ``validate`` checks and what ``run``
    checks before touching data_dir."""
    registries = agent_plugins()
    resolve_join_token(config, None)  # join_token_file readable
    check_log_file(config.log_file)
    if config.data_dir.exists():
        check_private_dir(config.data_dir, "data_dir")
    if config.trust_bundle_path is not None:
        load_bootstrap_bundle(config)  # readable and parseable; a URL is fetched only by run
    context = plugin_context(config)
    by_type: dict[str, Registry[Any]] = {
        "KeyManager": registries.key_managers,
        "NodeAttestor": registries.agent_node_attestors,
        "WorkloadAttestor": registries.workload_attestors,
    }
    check_enabled_plugins(config.plugins, by_type, context)


def resolve_join_token(config: AgentConfig, flag: str | None) -> str | None:
    if flag:
        return flag
    if config.join_token:
        return config.join_token
    if config.join_token_file is not None:
        try:
            return config.join_token_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
            raise ConfigError(
                f"agent.join_token_file {str(config.join_token_file)!r}: cannot read: {detail}"
            ) from None
    return None


def plugin_context(config: AgentConfig, join_token: str | None = None) -> PluginContext:
    """The context every agent plugin is built with."""
    return agent_plugins().context(
        trust_domain=config.trust_domain,
        data_dir=config.data_dir,
        base_dir=config.config_dir,
        services=HostServices(join_token=join_token),
    )


def build_node_attestor(config: AgentConfig, join_token: str | None) -> AgentNodeAttestor:
    plugin = config.plugins.single("NodeAttestor")
    if plugin is None:
        raise ConfigError('plugins: a NodeAttestor is required (e.g. NodeAttestor "join_token")')
    token = resolve_join_token(config, join_token) if plugin.name == "join_token" else None
    return agent_plugins().agent_node_attestors.create(plugin, plugin_context(config, token))


def build_workload_attestors(config: AgentConfig) -> list[WorkloadAttestor]:
    context = plugin_context(config)
    attestors = [
        agent_plugins().workload_attestors.create(plugin, context)
        for plugin in config.plugins.of_type("WorkloadAttestor")
    ]
    if not attestors:
        raise ConfigError('plugins: at least one WorkloadAttestor is required (e.g. "unix")')
    return attestors


def build_key_manager(config: AgentConfig) -> KeyManager:
    plugin = config.key_manager
    if plugin is None:
        raise ConfigError('plugins: a KeyManager is required (e.g. KeyManager "disk")')
    return agent_plugins().key_managers.create(plugin, plugin_context(config))


def load_bootstrap_bundle(config: AgentConfig) -> list[x509.Certificate]:
    if config.insecure_bootstrap:
        log.warning("insecure_bootstrap: the server's certificate chain is NOT verified")
        return []
    if config.trust_bundle_path is not None:
        try:
            with config.trust_bundle_path.open("rb") as fh:
                data = fh.read(MAX_TRUST_BUNDLE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"agent.trust_bundle_path {str(config.trust_bundle_path)!r}: cannot read:"
                f" {exc.strerror}"
            ) from None
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
