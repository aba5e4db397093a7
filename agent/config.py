"""The agent's configuration: SPIRE's ``agent {}`` block, ``plugins {}``, ``health_checks {}``
and ``telemetry {}``, from HCL1 or JSON into a frozen :class:`AgentConfig`.

Key names and defaults are SPIRE's, with Plastron's default socket path; parsing is as strict
as the server's (:mod:`plastron.server.config`). Each default is stated once, on the dataclass
field, and the reader takes it from there.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plastron.configs.block import Block
from plastron.configs.document import parse_document, read_config_file
from plastron.configs.overrides import Overrides
from plastron.configs.plugin_blocks import PluginConfig, PluginSet, parse_plugins
from plastron.configs.sections import (
    HealthChecksConfig,
    LogSettings,
    check_plugin_counts,
    optional_path,
    read_grpc_limits,
    read_health_checks,
    read_log_settings,
    required_path,
)
from plastron.configs.telemetry import TelemetryConfig, read_telemetry
from plastron.configs.unsupported import (
    AGENT_EXPERIMENTAL_UNSUPPORTED,
    AGENT_PLUGIN_TYPES_UNSUPPORTED,
    AGENT_UNSUPPORTED,
    refuse_unsupported,
)
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.transport.limits import ConnectionLimits

AGENT_PLUGIN_TYPES = ("KeyManager", "NodeAttestor", "WorkloadAttestor")
MAX_CACHE_SIZE = 10_000_000


@dataclass(frozen=True)
class AgentExperimental:
    sync_interval: dt.timedelta = dt.timedelta(seconds=5)
    # Plastron's own: keep an EntryNotifier/Watch stream to the server and sync as soon as it
    # pushes a change (agent/entry_push.py); false: poll every sync_interval only, as SPIRE.
    entry_push: bool = True
    # Plastron's own: HTTP/2 keepalive of the server connection while a call (the push stream)
    # is open: PING after this long silent, drop the connection if nothing comes back within
    # server_keepalive_timeout (plastron/transport/keepalive.py).
    server_keepalive_time: dt.timedelta = dt.timedelta(seconds=30)
    server_keepalive_timeout: dt.timedelta = dt.timedelta(seconds=10)


KEEPALIVE_BOUNDS = (dt.timedelta(seconds=1), dt.timedelta(minutes=10))


@dataclass(frozen=True)
class SdsConfig:
    """SPIRE's ``agent { sds { ... } }``: Envoy SDS resource names and validator default."""

    default_svid_name: str = "default"
    default_bundle_name: str = "ROOTCA"
    default_all_bundles_name: str = "ALL"
    disable_spiffe_cert_validation: bool = False


@dataclass(frozen=True)
class AgentConfig:
    trust_domain: TrustDomain
    server_address: str
    data_dir: Path
    plugins: PluginSet
    server_port: int = 8081
    socket_path: Path = Path("/tmp/plastron-agent/public/api.sock")  # noqa: S108
    # The admin API (Debug, Logger, DelegatedIdentity); None: not served, as in SPIRE.
    admin_socket_path: Path | None = None
    authorized_delegates: tuple[SpiffeId, ...] = ()
    trust_bundle_path: Path | None = None
    trust_bundle_url: str | None = None
    trust_bundle_format: str = "pem"
    insecure_bootstrap: bool = False
    join_token: str | None = field(default=None, repr=False)
    join_token_file: Path | None = None
    log_level: str = LogSettings.log_level
    log_format: str = LogSettings.log_format
    log_file: str = LogSettings.log_file
    workload_x509_svid_key_type: KeyType = KeyType.EC_P256
    x509_svid_cache_max_size: int = 1000
    jwt_svid_cache_max_size: int = 1000
    grpc_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    experimental: AgentExperimental = AgentExperimental()
    disable_sds_api: bool = False
    sds: SdsConfig = SdsConfig()
    health_checks: HealthChecksConfig = field(default_factory=HealthChecksConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # The directory of the config file it was read from (None for text parsed directly):
    # relative file paths in plugin_data resolve from here (PluginContext.base_dir).
    config_dir: Path | None = None

    @property
    def key_manager(self) -> PluginConfig | None:
        return self.plugins.single("KeyManager")


def _trust_bundle_source(a: Block) -> dict[str, Any]:
    path = optional_path(a, "trust_bundle_path")
    url_text: str = a.string("trust_bundle_url", "")
    url = url_text or None
    insecure = a.boolean("insecure_bootstrap", AgentConfig.insecure_bootstrap)
    sources = [k for k, v in (("trust_bundle_path", path), ("trust_bundle_url", url)) if v]
    if insecure and sources:
        raise ConfigError(f"agent: insecure_bootstrap cannot be combined with {sources[0]}")
    if not insecure and len(sources) != 1:
        raise ConfigError(
            "agent: exactly one of trust_bundle_path or trust_bundle_url is required"
            " (or insecure_bootstrap = true)"
        )
    if url is not None and not url.startswith("https://"):
        raise ConfigError(f"agent.trust_bundle_url must be an https:// URL ({url!r})")
    return {
        "trust_bundle_path": path,
        "trust_bundle_url": url,
        "insecure_bootstrap": insecure,
        "trust_bundle_format": a.choice(
            "trust_bundle_format", AgentConfig.trust_bundle_format, ("pem", "spiffe")
        ),
    }


def _experimental(block: Block) -> AgentExperimental:
    refuse_unsupported(block, AGENT_EXPERIMENTAL_UNSUPPORTED)
    experimental = AgentExperimental(
        sync_interval=block.duration("sync_interval", AgentExperimental.sync_interval),
        entry_push=block.boolean("entry_push", AgentExperimental.entry_push),
        server_keepalive_time=_keepalive(block, "server_keepalive_time"),
        server_keepalive_timeout=_keepalive(block, "server_keepalive_timeout"),
    )
    block.finish()
    return experimental


def _keepalive(block: Block, key: str) -> dt.timedelta:
    value = block.duration(key, getattr(AgentExperimental, key))
    low, high = KEEPALIVE_BOUNDS
    if not low <= value <= high:
        raise ConfigError(
            f"agent.experimental.{key} must be between {low.total_seconds():g}s and"
            f" {high.total_seconds() / 60:g}m ({value.total_seconds():g}s)"
        )
    return value


def _sds(block: Block) -> SdsConfig:
    """An empty name means the default, as in SPIRE (its defaults fill unset and empty keys);
    two defaults may not share a name, which SPIRE only warns about."""
    d = SdsConfig
    names = {
        key: block.string(key, default) or default
        for key, default in (
            ("default_svid_name", d.default_svid_name),
            ("default_bundle_name", d.default_bundle_name),
            ("default_all_bundles_name", d.default_all_bundles_name),
        )
    }
    sds = SdsConfig(
        **names,
        disable_spiffe_cert_validation=block.boolean(
            "disable_spiffe_cert_validation", d.disable_spiffe_cert_validation
        ),
    )
    block.finish()
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name in seen:
            raise ConfigError(
                f"agent.sds: {seen[name]} and {key} are both {name!r}; a resource name can"
                " mean only one thing"
            )
        seen[name] = key
    return sds


def _admin_socket(a: Block, socket_path: Path) -> dict[str, Any]:
    """``admin_socket_path`` must be absolute and outside the Workload API socket's directory
    (SPIRE's rule): that directory is open to every local user, the admin socket is not."""
    text = a.optional_string("admin_socket_path")
    delegates = a.spiffe_ids("authorized_delegates")
    if not text:
        return {"admin_socket_path": None, "authorized_delegates": delegates}
    admin = Path(text)
    if not admin.is_absolute():
        raise ConfigError(f"agent.admin_socket_path must be an absolute path ({text!r})")
    public_dir = Path(os.path.abspath(socket_path)).parent
    if Path(os.path.abspath(admin)).is_relative_to(public_dir):
        raise ConfigError(
            f"agent.admin_socket_path {text} cannot be in the same directory or a subdirectory"
            f" as that containing the Workload API socket ({public_dir})"
        )
    return {"admin_socket_path": admin, "authorized_delegates": delegates}


def _agent_section(a: Block) -> dict[str, Any]:
    d = AgentConfig
    join_token: str = a.string("join_token", "")
    join_token_file = optional_path(a, "join_token_file")
    if join_token and join_token_file:
        raise ConfigError("agent: give join_token or join_token_file, not both")
    socket_path = Path(a.string("socket_path", str(d.socket_path)))
    return {
        "trust_domain": a.trust_domain("trust_domain"),
        "server_address": a.string("server_address"),
        "server_port": a.integer("server_port", d.server_port, 1, 65535),
        "data_dir": required_path(a, "data_dir"),
        "socket_path": socket_path,
        **_admin_socket(a, socket_path),
        **_trust_bundle_source(a),
        "join_token": join_token or None,
        "join_token_file": join_token_file,
        **read_log_settings(a),
        "workload_x509_svid_key_type": a.key_type(
            "workload_x509_svid_key_type", d.workload_x509_svid_key_type
        ),
        "x509_svid_cache_max_size": a.integer(
            "x509_svid_cache_max_size", d.x509_svid_cache_max_size, 1, MAX_CACHE_SIZE
        ),
        "jwt_svid_cache_max_size": a.integer(
            "jwt_svid_cache_max_size", d.jwt_svid_cache_max_size, 1, MAX_CACHE_SIZE
        ),
        "experimental": _experimental(a.block("experimental")),
        "disable_sds_api": a.boolean("disable_sds_api", d.disable_sds_api),
        "sds": _sds(a.block("sds")),
        "grpc_limits": read_grpc_limits(a.block("grpc_limits")),
    }


def parse_agent_config(
    text: str,
    *,
    expand_env: bool = False,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> AgentConfig:
    """An AgentConfig from HCL or JSON text; ``expand_env`` is SPIRE's ``-expandEnv``,
    ``overrides`` the ``run`` flags that set ``agent {}`` keys (plastron.configs.overrides)."""
    root = parse_document(text, expand_env, environ)
    if not root.has("agent"):
        raise ConfigError('the "agent" block is required')
    section = root.block("agent")
    for key, (value, source) in (overrides or {}).items():
        section.override(key, value, source)
    refuse_unsupported(section, AGENT_UNSUPPORTED)
    values = _agent_section(section)
    section.finish()
    if not values["server_address"]:
        raise ConfigError("agent.server_address must not be empty")
    plugins = parse_plugins(
        root.raw("plugins", {}), "plugins", AGENT_PLUGIN_TYPES, AGENT_PLUGIN_TYPES_UNSUPPORTED
    )
    check_plugin_counts(plugins, at_most_one=("KeyManager",))
    health = read_health_checks(root.block("health_checks"))
    telemetry = read_telemetry(root.block("telemetry"))
    root.finish()
    return AgentConfig(plugins=plugins, health_checks=health, telemetry=telemetry, **values)


def load_agent_config(
    path: Path,
    *,
    expand_env: bool,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> AgentConfig:
    config = parse_agent_config(
        read_config_file(path), expand_env=expand_env, environ=environ, overrides=overrides
    )
    return replace(config, config_dir=path.absolute().parent)
