"""Server and agent configuration: SPIRE-shaped HCL1 (or JSON) into typed frozen dataclasses.

The file shape, key names and defaults are SPIRE's (``server {}``/``agent {}``, ``plugins {}``,
``health_checks {}``, ``telemetry {}``) with Plastron's default socket paths. Parsing is strict:
an unknown key is an error naming its dotted path (``unknown key "server.trust_domian"``), as is
a value of the wrong type (``server.bind_port must be an integer``). Every failure, whatever the
input, is a :class:`~plastron.errors.ConfigError`.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from hcl.parser import HclParser

from plastron.configs.block import Block, frozen_copy
from plastron.configs.duration import format_duration, parse_duration
from plastron.configs.env_expansion import expand_env as _expand_env
from plastron.configs.plugin_blocks import PluginConfig, PluginSet, parse_plugins
from plastron.configs.secret import resolve_secret
from plastron.errors import ConfigError
from plastron.keymanager import KeyType
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.strict_json import no_duplicate_keys

__all__ = [
    "AgentConfig",
    "AgentExperimental",
    "CaSubject",
    "ConfigError",
    "HealthChecksConfig",
    "PluginConfig",
    "PluginSet",
    "RateLimitConfig",
    "ServerConfig",
    "ServerExperimental",
    "format_duration",
    "load_agent_config",
    "load_server_config",
    "parse_agent_config",
    "parse_duration",
    "parse_server_config",
    "resolve_secret",
]

MAX_CONFIG_BYTES = 1024 * 1024
SERVER_PLUGIN_TYPES = (
    "BundlePublisher",
    "CredentialComposer",
    "DataStore",
    "KeyManager",
    "NodeAttestor",
    "Notifier",
    "UpstreamAuthority",
)
AGENT_PLUGIN_TYPES = ("KeyManager", "NodeAttestor", "SVIDStore", "WorkloadAttestor")
LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")
_PORT = (0, 65535)


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
    cache_reload_interval: dt.timedelta = dt.timedelta(seconds=5)
    events_based_cache: bool = False
    # Deadline for each AttestAgent challenge round (DESIGN §2.3).
    challenge_timeout: dt.timedelta = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class HealthChecksConfig:
    listener_enabled: bool = False
    bind_address: str = "localhost"
    bind_port: int = 80
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass(frozen=True)
class ServerConfig:
    trust_domain: TrustDomain
    data_dir: Path
    plugins: PluginSet
    bind_address: str = "0.0.0.0"  # noqa: S104 - SPIRE's default: the API listens on all interfaces
    bind_port: int = 8081
    socket_path: Path = Path("/tmp/plastron-server/private/api.sock")  # noqa: S108
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: str = ""
    ca_key_type: KeyType = KeyType.EC_P256
    ca_subject: CaSubject = CaSubject()
    ca_ttl: dt.timedelta = dt.timedelta(hours=24)
    default_x509_svid_ttl: dt.timedelta = dt.timedelta(hours=1)
    default_jwt_svid_ttl: dt.timedelta = dt.timedelta(minutes=5)
    agent_ttl: dt.timedelta = dt.timedelta(hours=1)
    jwt_key_type: KeyType = KeyType.EC_P256
    jwt_issuer: str = ""
    admin_ids: tuple[SpiffeId, ...] = ()
    audit_log_enabled: bool = False
    ratelimit: RateLimitConfig = RateLimitConfig()
    experimental: ServerExperimental = ServerExperimental()
    # Kept as parsed; the federation module gives it a type when it is written.
    federation: Mapping[str, Any] = field(default_factory=dict, compare=False)
    health_checks: HealthChecksConfig = HealthChecksConfig()
    telemetry: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def datastore(self) -> PluginConfig:
        found = self.plugins.single("DataStore")
        assert found is not None  # parse_server_config always provides one
        return found

    @property
    def key_manager(self) -> PluginConfig | None:
        return self.plugins.single("KeyManager")


@dataclass(frozen=True)
class AgentExperimental:
    sync_interval: dt.timedelta = dt.timedelta(seconds=5)


@dataclass(frozen=True)
class AgentConfig:
    trust_domain: TrustDomain
    server_address: str
    data_dir: Path
    plugins: PluginSet
    server_port: int = 8081
    socket_path: Path = Path("/tmp/plastron-agent/public/api.sock")  # noqa: S108
    admin_socket_path: Path | None = None
    trust_bundle_path: Path | None = None
    trust_bundle_url: str | None = None
    trust_bundle_format: str = "pem"
    insecure_bootstrap: bool = False
    join_token: str | None = field(default=None, repr=False)
    join_token_file: Path | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: str = ""
    workload_x509_svid_key_type: KeyType = KeyType.EC_P256
    x509_svid_cache_max_size: int = 1000
    jwt_svid_cache_max_size: int = 1000
    experimental: AgentExperimental = AgentExperimental()
    health_checks: HealthChecksConfig = HealthChecksConfig()
    telemetry: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key_manager(self) -> PluginConfig | None:
        return self.plugins.single("KeyManager")


_reject_duplicate_keys = no_duplicate_keys(lambda key: ConfigError(f'key "{key}" is given twice'))


_HCL_LOCK = threading.Lock()


@cache
def _hcl_parser() -> Any:
    # pyhcl's hcl.loads rebuilds its LALR tables on every call (~25 ms); the parser object
    # keeps no state between parses (a fresh lexer each time), so one is built and reused.
    return HclParser()


def _parse_hcl(text: str) -> Any:
    with _HCL_LOCK:
        return _hcl_parser().parse(text)


def _parse_document(text: str, expand_env: bool, environ: Mapping[str, str] | None) -> Block:
    if not isinstance(text, str):
        raise ConfigError("configuration must be text")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"configuration is larger than {MAX_CONFIG_BYTES} bytes")
    if expand_env:
        text = _expand_env(text, environ)
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"configuration is larger than {MAX_CONFIG_BYTES} bytes after -expandEnv"
            )
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        else:
            doc = _parse_hcl(text)
    except ConfigError:
        raise
    except Exception as exc:  # pyhcl/ply raise assorted types; untrusted text -> ConfigError
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse configuration: {detail}") from None
    if not isinstance(doc, dict):
        raise ConfigError("configuration must be a set of blocks (server {...} plugins {...})")
    return Block(doc)


def _log_settings(block: Block) -> dict[str, Any]:
    return {
        "log_level": block.choice("log_level", "info", LOG_LEVELS).upper(),
        "log_format": block.choice("log_format", "text", ("text", "json")),
        "log_file": block.string("log_file", ""),
    }


def _health_checks(block: Block) -> HealthChecksConfig:
    hc = HealthChecksConfig(
        listener_enabled=block.boolean("listener_enabled", False),
        bind_address=block.string("bind_address", "localhost"),
        bind_port=block.integer("bind_port", 80, *_PORT),
        live_path=block.string("live_path", "/live"),
        ready_path=block.string("ready_path", "/ready"),
    )
    block.finish()
    for key, value in (("live_path", hc.live_path), ("ready_path", hc.ready_path)):
        if not value.startswith("/"):
            raise ConfigError(f"{block.where(key)} must start with '/' ({value!r})")
    return hc


def _ca_subject(block: Block) -> CaSubject:
    subject = CaSubject(
        country=block.string_list("country", 16) if block.has("country") else ("US",),
        organization=block.string_list("organization", 16)
        if block.has("organization")
        else ("SPIFFE",),
        common_name=block.string("common_name", ""),
    )
    block.finish()
    return subject


def _required_path(block: Block, key: str) -> Path:
    text: str = block.string(key)
    if not text:
        raise ConfigError(f"{block.where(key)} must not be empty")
    return Path(text)


def _optional_path(block: Block, key: str) -> Path | None:
    text: str = block.string(key, "")
    return Path(text) if text else None


def _check_plugin_counts(plugins: PluginSet, *, at_most_one: tuple[str, ...]) -> None:
    for plugin_type in at_most_one:
        found = plugins.of_type(plugin_type)
        if len(found) > 1:
            names = ", ".join(f'"{p.name}"' for p in found)
            raise ConfigError(f"plugins: at most one {plugin_type} may be enabled (got {names})")
    if not plugins.of_type("NodeAttestor"):
        raise ConfigError("plugins: at least one NodeAttestor must be configured")


def _with_datastore_defaults(plugins: PluginSet, data_dir: Path) -> PluginSet:
    """No DataStore means SQLite in data_dir; a ``sql`` one gets SPIRE's defaults filled in."""
    default_db = str(data_dir / "datastore.sqlite3")
    if not plugins.of_type("DataStore"):
        data = {"database_type": "sqlite3", "connection_string": default_db}
        ds = PluginConfig("DataStore", "sql", frozen_copy(data))
        return PluginSet((*plugins.plugins, ds))
    out = []
    for plugin in plugins:
        if plugin.type == "DataStore" and plugin.name == "sql" and plugin.enabled:
            data = dict(plugin.plugin_data)
            data.setdefault("database_type", "sqlite3")
            if data["database_type"] == "sqlite3":
                data.setdefault("connection_string", default_db)
            out.append(replace(plugin, plugin_data=frozen_copy(data)))
        else:
            out.append(plugin)
    return PluginSet(tuple(out))


def _server_section(s: Block) -> dict[str, Any]:
    ca_key_type = s.key_type("ca_key_type", KeyType.EC_P256)
    x509_ttl = s.duration("default_x509_svid_ttl", dt.timedelta(hours=1))
    limits = s.block("ratelimit")
    ratelimit = RateLimitConfig(
        attestation=limits.boolean("attestation", True), signing=limits.boolean("signing", True)
    )
    limits.finish()
    exp = s.block("experimental")
    experimental = ServerExperimental(
        cache_reload_interval=exp.duration("cache_reload_interval", dt.timedelta(seconds=5)),
        events_based_cache=exp.boolean("events_based_cache", False),
        challenge_timeout=exp.duration("challenge_timeout", dt.timedelta(seconds=30)),
    )
    exp.finish()
    return {
        "trust_domain": s.trust_domain("trust_domain"),
        "data_dir": _required_path(s, "data_dir"),
        "bind_address": s.string("bind_address", "0.0.0.0"),  # noqa: S104 - SPIRE default
        "bind_port": s.integer("bind_port", 8081, *_PORT),
        "socket_path": Path(s.string("socket_path", str(ServerConfig.socket_path))),
        **_log_settings(s),
        "ca_key_type": ca_key_type,
        "ca_subject": _ca_subject(s.block("ca_subject")),
        "ca_ttl": s.duration("ca_ttl", dt.timedelta(hours=24)),
        "default_x509_svid_ttl": x509_ttl,
        "default_jwt_svid_ttl": s.duration("default_jwt_svid_ttl", dt.timedelta(minutes=5)),
        "agent_ttl": s.duration("agent_ttl", x509_ttl),
        "jwt_key_type": s.key_type("jwt_key_type", ca_key_type),
        "jwt_issuer": s.string("jwt_issuer", ""),
        "admin_ids": s.spiffe_ids("admin_ids"),
        "audit_log_enabled": s.boolean("audit_log_enabled", False),
        "ratelimit": ratelimit,
        "experimental": experimental,
        "federation": frozen_copy(s.mapping("federation")),
    }


def parse_server_config(
    text: str, *, expand_env: bool = False, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """A ServerConfig from HCL or JSON text; ``expand_env`` is SPIRE's ``-expandEnv``."""
    root = _parse_document(text, expand_env, environ)
    if not root.has("server"):
        raise ConfigError('the "server" block is required')
    section = root.block("server")
    values = _server_section(section)
    section.finish()
    plugins = parse_plugins(root.raw("plugins", {}), "plugins", SERVER_PLUGIN_TYPES)
    _check_plugin_counts(plugins, at_most_one=("DataStore", "KeyManager", "UpstreamAuthority"))
    plugins = _with_datastore_defaults(plugins, values["data_dir"])
    health = _health_checks(root.block("health_checks"))
    telemetry = frozen_copy(root.mapping("telemetry"))
    root.finish()
    config = ServerConfig(plugins=plugins, health_checks=health, telemetry=telemetry, **values)
    for admin in config.admin_ids:
        if not admin.path:
            raise ConfigError(f"server.admin_ids: {admin} is a trust domain ID, not a workload ID")
    return config


def _trust_bundle_source(a: Block) -> dict[str, Any]:
    path = _optional_path(a, "trust_bundle_path")
    url_text: str = a.string("trust_bundle_url", "")
    url = url_text or None
    insecure = a.boolean("insecure_bootstrap", False)
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
        "trust_bundle_format": a.choice("trust_bundle_format", "pem", ("pem", "spiffe")),
    }


def _agent_section(a: Block) -> dict[str, Any]:
    join_token: str = a.string("join_token", "")
    join_token_file = _optional_path(a, "join_token_file")
    if join_token and join_token_file:
        raise ConfigError("agent: give join_token or join_token_file, not both")
    exp = a.block("experimental")
    experimental = AgentExperimental(
        sync_interval=exp.duration("sync_interval", dt.timedelta(seconds=5))
    )
    exp.finish()
    return {
        "trust_domain": a.trust_domain("trust_domain"),
        "server_address": a.string("server_address"),
        "server_port": a.integer("server_port", 8081, 1, 65535),
        "data_dir": _required_path(a, "data_dir"),
        "socket_path": Path(a.string("socket_path", str(AgentConfig.socket_path))),
        "admin_socket_path": _optional_path(a, "admin_socket_path"),
        **_trust_bundle_source(a),
        "join_token": join_token or None,
        "join_token_file": join_token_file,
        **_log_settings(a),
        "workload_x509_svid_key_type": a.key_type("workload_x509_svid_key_type", KeyType.EC_P256),
        "x509_svid_cache_max_size": a.integer("x509_svid_cache_max_size", 1000, 1, 10_000_000),
        "jwt_svid_cache_max_size": a.integer("jwt_svid_cache_max_size", 1000, 1, 10_000_000),
        "experimental": experimental,
    }


def parse_agent_config(
    text: str, *, expand_env: bool = False, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """An AgentConfig from HCL or JSON text; ``expand_env`` is SPIRE's ``-expandEnv``."""
    root = _parse_document(text, expand_env, environ)
    if not root.has("agent"):
        raise ConfigError('the "agent" block is required')
    section = root.block("agent")
    values = _agent_section(section)
    section.finish()
    if not values["server_address"]:
        raise ConfigError("agent.server_address must not be empty")
    plugins = parse_plugins(root.raw("plugins", {}), "plugins", AGENT_PLUGIN_TYPES)
    _check_plugin_counts(plugins, at_most_one=("KeyManager",))
    health = _health_checks(root.block("health_checks"))
    telemetry = frozen_copy(root.mapping("telemetry"))
    root.finish()
    return AgentConfig(plugins=plugins, health_checks=health, telemetry=telemetry, **values)


def _read_config_file(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None


def load_server_config(
    path: Path, *, expand_env: bool, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    return parse_server_config(_read_config_file(path), expand_env=expand_env, environ=environ)


def load_agent_config(
    path: Path, *, expand_env: bool, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    return parse_agent_config(_read_config_file(path), expand_env=expand_env, environ=environ)
