"""The ``plugins { Type "name" { plugin_data {...} enabled = true } }`` section.

pyhcl returns a plugin type used once as ``{"name": body}``, several names in one block as a
dict with several keys, the same type in separate statements as a list of one-key dicts, and
HCL-JSON may wrap any body in a one-element list. Every shape is flattened here, once, into
:class:`PluginConfig` values in file order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from plastron.configs.block import Block, as_mapping, frozen_copy, join_path
from plastron.configs.unsupported import not_supported
from plastron.errors import ConfigError

MAX_PLUGINS = 64


@dataclass(frozen=True)
class PluginConfig:
    """One configured plugin. ``plugin_data`` is kept out of repr: it may hold secrets."""

    type: str
    name: str
    plugin_data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    enabled: bool = True

    @property
    def path(self) -> str:
        """Dotted config path of this plugin's block, for error messages."""
        return f"plugins.{self.type}.{self.name}"

    def settings(self) -> Block:
        """The typed reader every plugin reads its ``plugin_data`` with: each error names
        ``plugins.<Type>.<name>.plugin_data.<key>`` and the rule, and ``finish()`` refuses the
        keys nobody read (``unknown key "plugins.KeyManager.disk.plugin_data.dir"``)."""
        return Block(dict(self.plugin_data), f"{self.path}.plugin_data")


@dataclass(frozen=True)
class PluginSet:
    """The enabled and disabled plugins of one config, in file order."""

    plugins: tuple[PluginConfig, ...] = ()

    def __iter__(self) -> Iterator[PluginConfig]:
        return iter(self.plugins)

    def of_type(self, plugin_type: str) -> tuple[PluginConfig, ...]:
        """The enabled plugins of ``plugin_type``."""
        return tuple(p for p in self.plugins if p.type == plugin_type and p.enabled)

    def single(self, plugin_type: str) -> PluginConfig | None:
        """The one enabled plugin of ``plugin_type`` (config validation ensured at most one)."""
        found = self.of_type(plugin_type)
        return found[0] if found else None


def _named_bodies(value: object, where: str, plugin_type: str) -> Iterator[tuple[str, object]]:
    """(name, body) pairs from every shape pyhcl/JSON give a plugin type's value."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict) or not item:
            raise ConfigError(f'"{where}" must be written as {plugin_type} "<name>" {{...}}')
        for name, body in item.items():
            if not isinstance(name, str):
                raise ConfigError(f'"{where}" has a non-string plugin name')
            yield name, body


def _plugin(plugin_type: str, name: str, body: object, where: str) -> PluginConfig:
    block = Block(body, where)
    if block.has("plugin_cmd") or block.has("plugin_checksum"):
        raise ConfigError(
            f"{where}: external plugins (plugin_cmd/plugin_checksum) are not supported;"
            " Plastron's plugins are built in"
        )
    data = block.mapping("plugin_data")
    enabled = block.boolean("enabled", True)
    block.finish()
    return PluginConfig(plugin_type, name, frozen_copy(data), enabled)


def parse_plugins(
    value: object,
    path: str,
    known_types: tuple[str, ...],
    unsupported_types: tuple[str, ...] = (),
) -> PluginSet:
    """Flatten the ``plugins`` block; unknown types and duplicate (type, name) are errors, and
    a SPIRE plugin type Plastron does not implement is refused by name, enabled or not."""
    section = as_mapping(value, path)
    plugins: list[PluginConfig] = []
    seen: set[tuple[str, str]] = set()
    for plugin_type, entries in section.items():
        where = join_path(path, plugin_type)
        if plugin_type in unsupported_types:
            raise not_supported(where)
        if plugin_type not in known_types:
            raise ConfigError(
                f'unknown plugin type "{where}"; known: {", ".join(sorted(known_types))}'
            )
        for name, body in _named_bodies(entries, where, plugin_type):
            plugin_where = join_path(where, name)
            if not name or len(name) > 128:
                raise ConfigError(f'"{where}" needs a plugin name of 1 to 128 characters')
            if (plugin_type, name) in seen:
                raise ConfigError(f'plugin {plugin_type} "{name}" is configured more than once')
            seen.add((plugin_type, name))
            plugins.append(_plugin(plugin_type, name, body, plugin_where))
            if len(plugins) > MAX_PLUGINS:
                raise ConfigError(f"{path} configures more than {MAX_PLUGINS} plugins")
    return PluginSet(tuple(plugins))
