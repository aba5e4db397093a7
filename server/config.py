"""The server's configuration: SPIRE's ``server {}`` block, ``plugins {}``, ``health_checks {}``
and ``telemetry {}``, from HCL1 or JSON into a frozen :class:`ServerConfig`.

Key names and defaults are SPIRE's, with Plastron's default socket path. Parsing is strict: an
unknown key is an error naming its dotted path (``unknown key "server.trust_domian"``), as is a
value of the wrong type (``server.bind_port must be an integer``). Each default is stated once,
on the dataclass field, and the reader takes it from there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plastron.configs.block import Block
from plastron.configs.document import parse_document, read_config_file
from plastron.configs.duration import parse_duration
from plastron.configs.overrides import Overrides
from plastron.configs.plugin_blocks import PluginConfig, PluginSet, parse_plugins
from plastron.configs.sections import (
    PORT_RANGE,
    HealthChecksConfig,
    LogSettings,
    check_plugin_counts,
    read_grpc_limits,
    read_health_checks,
    read_log_settings,
    required_path,
)
from plastron.configs.telemetry import TelemetryConfig, read_telemetry
from plastron.configs.unsupported import (
    SERVER_EXPERIMENTAL_UNSUPPORTED,
    SERVER_PLUGIN_TYPES_UNSUPPORTED,
    SERVER_UNSUPPORTED,
    refuse_unsupported,
)
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.server.agentless.config import ExchangeListenerConfig, read_exchange_listener
from plastron.server.federation.config import FederationConfig, read_federation
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.transport.limits import ConnectionLimits

SERVER_PLUGIN_TYPES = ("DataStore", "KeyManager", "NodeAttestor", "UpstreamAuthority")
# Without a DataStore block the server uses this one: the sql store's defaults make it SQLite
# at <data_dir>/datastore.sqlite3 (SPIRE's default).
DEFAULT_DATASTORE = "sql"


@dataclass(frozen=True)
class CaSubject:
    country: tuple[str, ...] = ("US",)
    organization: tuple[str, ...] = ("SPIFFE",)
    common_name: str = ""


@dataclass(frozen=True)
class RateLimitConfig:
    attestation: bool = True
    signing: bool = True


@dataclass(frozen=True)
class ServerExperimental:
    # Deadline for each AttestAgent challenge round: an agent that never answers is dropped.
    challenge_timeout: dt.timedelta = dt.timedelta(seconds=30)
    # How often the entry cache reads the datastore's change events: the lag until another
    # server's write is seen here (and pushed to this server's agents). Each poll is one read
    # (the events after the cursors and what they name, in one transaction).
    cache_reload_interval: dt.timedelta = dt.timedelta(milliseconds=250)


ENTRY_CACHE_POLL_BOUNDS = ("50ms", "5m")


@dataclass(frozen=True)
class ServerConfig:
    trust_domain: TrustDomain
    data_dir: Path
    plugins: PluginSet
    bind_address: str = "0.0.0.0"  # noqa: S104 - SPIRE's default: the API listens on all interfaces
    bind_port: int = 8081
    socket_path: Path = Path("/tmp/plastron-server/private/api.sock")  # noqa: S108
    log_level: str = LogSettings.log_level
    log_format: str = LogSettings.log_format
    log_file: str = LogSettings.log_file
    ca_key_type: KeyType = KeyType.EC_P256
    ca_subject: CaSubject = CaSubject()
    ca_ttl: dt.timedelta = dt.timedelta(hours=24)
    default_x509_svid_ttl: dt.timedelta = dt.timedelta(hours=1)
    default_jwt_svid_ttl: dt.timedelta = dt.timedelta(minutes=5)
    # agent_ttl and jwt_key_type default to default_x509_svid_ttl and ca_key_type (as SPIRE)
    agent_ttl: dt.timedelta = default_x509_svid_ttl
    # Agents of a method that proves no unique machine (aws_iam): short SVIDs, and their node
    # rows are pruned once those expire.
    non_unique_agent_ttl: dt.timedelta = dt.timedelta(hours=1)
    # SPIRE's node pruning: off unless prune_attested_nodes_expired_for is set.
    node_pruning: NodePruning | None = None
    jwt_key_type: KeyType = ca_key_type
    jwt_issuer: str = ""
    admin_ids: tuple[SpiffeId, ...] = ()
    audit_log_enabled: bool = False
    ratelimit: RateLimitConfig = RateLimitConfig()
    grpc_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    experimental: ServerExperimental = ServerExperimental()
    federation: FederationConfig = field(default_factory=FederationConfig)
    agentless_exchange: ExchangeListenerConfig | None = None
    health_checks: HealthChecksConfig = field(default_factory=HealthChecksConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # The directory of the config file it was read from (None for text parsed directly):
    # relative file paths in plugin_data resolve from here (PluginContext.base_dir).
    config_dir: Path | None = None

    @property
    def datastore(self) -> PluginConfig:
        found = self.plugins.single("DataStore")
        assert found is not None  # parse_server_config always provides one
        return found

    @property
    def key_manager(self) -> PluginConfig | None:
        return self.plugins.single("KeyManager")


@dataclass(frozen=True)
class NodePruning:
    """``prune_attested_nodes_expired_for`` and its two companions (SPIRE's keys)."""

    expired_for: dt.timedelta
    batch_size: int = 1000  # SPIRE's default
    include_non_reattestable: bool = False  # prune_tofu_nodes


_PRUNING_COMPANIONS = ("prune_attested_nodes_batch_size", "prune_tofu_nodes")


def _node_pruning(s: Block) -> NodePruning | None:
    if not s.has("prune_attested_nodes_expired_for"):
        for key in _PRUNING_COMPANIONS:
            if s.has(key):
                # SPIRE ignores them then; Plastron accepts nothing it would ignore.
                raise ConfigError(
                    f"server.{key} only applies with server.prune_attested_nodes_expired_for"
                )
        return None
    d = NodePruning
    return NodePruning(
        expired_for=s.duration("prune_attested_nodes_expired_for", dt.timedelta(0)),
        batch_size=s.integer("prune_attested_nodes_batch_size", d.batch_size, 1),
        include_non_reattestable=s.boolean("prune_tofu_nodes", d.include_non_reattestable),
    )


def _with_default_datastore(plugins: PluginSet) -> PluginSet:
    """No enabled DataStore block means ``DataStore "sql" {}``, whose own defaults make it
    SQLite in data_dir (SPIRE's default)."""
    if plugins.of_type("DataStore"):
        return plugins
    return PluginSet((*plugins.plugins, PluginConfig("DataStore", DEFAULT_DATASTORE)))


def _ca_subject(block: Block) -> CaSubject:
    d = CaSubject
    subject = CaSubject(
        country=block.string_list("country", 16) if block.has("country") else d.country,
        organization=(
            block.string_list("organization", 16) if block.has("organization") else d.organization
        ),
        common_name=block.string("common_name", d.common_name),
    )
    block.finish()
    return subject


def _ratelimit(block: Block) -> RateLimitConfig:
    d = RateLimitConfig
    limits = RateLimitConfig(
        attestation=block.boolean("attestation", d.attestation),
        signing=block.boolean("signing", d.signing),
    )
    block.finish()
    return limits


def _experimental(block: Block) -> ServerExperimental:
    refuse_unsupported(block, SERVER_EXPERIMENTAL_UNSUPPORTED)
    d = ServerExperimental
    experimental = ServerExperimental(
        challenge_timeout=block.duration("challenge_timeout", d.challenge_timeout),
        cache_reload_interval=block.duration("cache_reload_interval", d.cache_reload_interval),
    )
    block.finish()
    low, high = ENTRY_CACHE_POLL_BOUNDS
    interval = experimental.cache_reload_interval
    if not parse_duration(low) <= interval <= parse_duration(high):
        raise ConfigError(
            "server.experimental.cache_reload_interval must be between "
            f"{low} and {high} ({interval.total_seconds():g}s)"
        )
    return experimental


def _server_section(s: Block) -> dict[str, Any]:
    d = ServerConfig
    ca_key_type = s.key_type("ca_key_type", d.ca_key_type)
    x509_ttl = s.duration("default_x509_svid_ttl", d.default_x509_svid_ttl)
    td = s.trust_domain("trust_domain")
    federation = read_federation(s.block("federation"), td) if s.has("federation") else None
    return {
        "trust_domain": td,
        "federation": federation or FederationConfig(),
        "agentless_exchange": (
            read_exchange_listener(s.block("agentless_exchange"))
            if s.has("agentless_exchange")
            else None
        ),
        "data_dir": required_path(s, "data_dir"),
        "bind_address": s.string("bind_address", d.bind_address),
        "bind_port": s.integer("bind_port", d.bind_port, *PORT_RANGE),
        "socket_path": Path(s.string("socket_path", str(d.socket_path))),
        **read_log_settings(s),
        "ca_key_type": ca_key_type,
        "ca_subject": _ca_subject(s.block("ca_subject")),
        "ca_ttl": s.duration("ca_ttl", d.ca_ttl),
        "default_x509_svid_ttl": x509_ttl,
        "default_jwt_svid_ttl": s.duration("default_jwt_svid_ttl", d.default_jwt_svid_ttl),
        "agent_ttl": s.duration("agent_ttl", x509_ttl),
        "non_unique_agent_ttl": s.duration("non_unique_agent_ttl", d.non_unique_agent_ttl),
        "node_pruning": _node_pruning(s),
        "jwt_key_type": s.key_type("jwt_key_type", ca_key_type),
        "jwt_issuer": s.string("jwt_issuer", d.jwt_issuer),
        "admin_ids": s.spiffe_ids("admin_ids"),
        "audit_log_enabled": s.boolean("audit_log_enabled", d.audit_log_enabled),
        "ratelimit": _ratelimit(s.block("ratelimit")),
        "grpc_limits": read_grpc_limits(s.block("grpc_limits")),
        "experimental": _experimental(s.block("experimental")),
    }


def parse_server_config(
    text: str,
    *,
    expand_env: bool = False,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> ServerConfig:
    """A ServerConfig from HCL or JSON text; ``expand_env`` is SPIRE's ``-expandEnv``,
    ``overrides`` the ``run`` flags that set ``server {}`` keys (plastron.configs.overrides)."""
    root = parse_document(text, expand_env, environ)
    if not root.has("server"):
        raise ConfigError('the "server" block is required')
    section = root.block("server")
    for key, (value, source) in (overrides or {}).items():
        section.override(key, value, source)
    refuse_unsupported(section, SERVER_UNSUPPORTED)
    values = _server_section(section)
    section.finish()
    plugins = parse_plugins(
        root.raw("plugins", {}), "plugins", SERVER_PLUGIN_TYPES, SERVER_PLUGIN_TYPES_UNSUPPORTED
    )
    check_plugin_counts(plugins, at_most_one=("DataStore", "KeyManager", "UpstreamAuthority"))
    plugins = _with_default_datastore(plugins)
    health = read_health_checks(root.block("health_checks"))
    telemetry = read_telemetry(root.block("telemetry"))
    root.finish()
    config = ServerConfig(plugins=plugins, health_checks=health, telemetry=telemetry, **values)
    for admin in config.admin_ids:
        if not admin.path:
            raise ConfigError(f"server.admin_ids: {admin} is a trust domain ID, not a workload ID")
    return config


def load_server_config(
    path: Path,
    *,
    expand_env: bool,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> ServerConfig:
    config = parse_server_config(
        read_config_file(path), expand_env=expand_env, environ=environ, overrides=overrides
    )
    return replace(config, config_dir=path.absolute().parent)
