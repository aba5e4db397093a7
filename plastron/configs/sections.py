"""What the server's and the agent's config files share: ``health_checks {}``, the log
settings, ``grpc_limits {}``, path values and the plugin-count rules. Defaults are stated once,
on the dataclasses; the readers take them from there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginSet
from plastron.errors import ConfigError
from plastron.transport.limits import ConnectionLimits

LOG_LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal", "panic")
PORT_RANGE = (0, 65535)


@dataclass(frozen=True)
class HealthChecksConfig:
    listener_enabled: bool = False
    bind_address: str = "localhost"
    bind_port: int = 80
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass(frozen=True)
class LogSettings:
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: str = ""


def read_log_settings(block: Block) -> dict[str, Any]:
    """``log_level``, ``log_format`` and ``log_file`` as keyword arguments of a runtime config."""
    d = LogSettings
    return {
        "log_level": block.choice("log_level", d.log_level.lower(), LOG_LEVELS).upper(),
        "log_format": block.choice("log_format", d.log_format, ("text", "json")),
        "log_file": block.string("log_file", d.log_file),
    }


def read_health_checks(block: Block) -> HealthChecksConfig:
    d = HealthChecksConfig
    hc = HealthChecksConfig(
        listener_enabled=block.boolean("listener_enabled", d.listener_enabled),
        bind_address=block.string("bind_address", d.bind_address),
        bind_port=block.integer("bind_port", d.bind_port, *PORT_RANGE),
        live_path=block.string("live_path", d.live_path),
        ready_path=block.string("ready_path", d.ready_path),
    )
    block.finish()
    for key, value in (("live_path", hc.live_path), ("ready_path", hc.ready_path)):
        if not value.startswith("/"):
            raise ConfigError(f"{block.where(key)} must start with '/' ({value!r})")
    return hc


def read_grpc_limits(block: Block) -> ConnectionLimits:
    """``grpc_limits {}`` (server and agent): what one peer may open on a listener."""
    d = ConnectionLimits
    limits = ConnectionLimits(
        max_concurrent_streams=block.integer(
            "max_concurrent_streams", d.max_concurrent_streams, 1, 2**31 - 1
        ),
        max_connections_per_peer=block.integer(
            "max_connections_per_peer", d.max_connections_per_peer, 1, 10_000_000
        ),
        first_message_timeout=block.duration("first_message_timeout", d.first_message_timeout),
    )
    block.finish()
    return limits


def required_path(block: Block, key: str) -> Path:
    text: str = block.string(key)
    if not text:
        raise ConfigError(f"{block.where(key)} must not be empty")
    return Path(text)


def optional_path(block: Block, key: str) -> Path | None:
    text: str = block.string(key, "")
    return Path(text) if text else None


def check_plugin_counts(plugins: PluginSet, *, at_most_one: tuple[str, ...]) -> None:
    """At most one enabled plugin of each type in ``at_most_one``; at least one NodeAttestor."""
    for plugin_type in at_most_one:
        found = plugins.of_type(plugin_type)
        if len(found) > 1:
            names = ", ".join(f'"{p.name}"' for p in found)
            raise ConfigError(f"plugins: at most one {plugin_type} may be enabled (got {names})")
    if not plugins.of_type("NodeAttestor"):
        raise ConfigError("plugins: at least one NodeAttestor must be configured")
