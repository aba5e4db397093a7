"""Plugin registries: one per plugin type, mapping the name in config to a factory.

The server and agent build their plugins from :class:`~plastron.configs.plugin_blocks.PluginConfig`
values::

    km = KEY_MANAGERS.create(config.key_manager, PluginContext(data_dir=config.data_dir))

The registries (KeyManager, NodeAttestor halves, UpstreamAuthority) and the protocols they hold
live in core, so a plugin in any room (hsm, tpm) registers without importing a runtime. A
factory validates its own ``plugin_data`` and raises ConfigError naming the key
(``plugins.KeyManager.disk.directory must be a string``).

A signing key may also be named by URI (x509pop's ``private_key_uri = "pkcs11:..."``): the room
that owns the URI scheme registers a :data:`KeyUriOpener` for it, which opens a KeyManager
holding that key, so core uses the key without knowing where it lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from cryptography import x509

from plastron.attestors.base import AgentNodeAttestor, ServerNodeAttestor
from plastron.clock import Clock, SystemClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.keymanager import DiskKeyManager, KeyManager, MemoryKeyManager, PrivateKey
from plastron.spiffe.ids import TrustDomain
from plastron.upstream import UpstreamAuthority

T = TypeVar("T")


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may need from its host besides its own plugin_data."""

    trust_domain: TrustDomain | None = None
    data_dir: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    # Where relative paths in plugin_data resolve from (the config file's directory).
    base_dir: Path | None = None
    # Server only: the trust domain's current X.509 authorities (x509pop "spiffe" mode).
    x509_authorities: Callable[[], Awaitable[Sequence[x509.Certificate]]] | None = None

    def resolve(self, path: str | Path) -> Path:
        """A file path from plugin_data: a relative one is taken from ``base_dir``."""
        p = Path(path)
        return self.base_dir / p if self.base_dir is not None and not p.is_absolute() else p


Factory = Callable[[PluginConfig, PluginContext], T]


class Registry(Generic[T]):
    """Factories for one plugin type, by name."""

    def __init__(self, plugin_type: str) -> None:
        self.plugin_type = plugin_type
        self._factories: dict[str, Factory[T]] = {}

    def __repr__(self) -> str:
        return f"Registry({self.plugin_type!r}, names={self.names()})"

    def register(self, name: str, factory: Factory[T]) -> None:
        if not name:
            raise ValueError(f"{self.plugin_type}: plugin name must not be empty")
        if name in self._factories:
            raise ValueError(f'{self.plugin_type} "{name}" is already registered')
        self._factories[name] = factory

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def create(self, plugin_config: PluginConfig, context: PluginContext) -> T:
        """Build the plugin ``plugin_config`` names; ConfigError if the name is unknown."""
        if plugin_config.type != self.plugin_type:
            raise ConfigError(
                f"{plugin_config.path}: a {plugin_config.type} cannot be built by the"
                f" {self.plugin_type} registry"
            )
        factory = self._factories.get(plugin_config.name)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f'unknown {self.plugin_type} "{plugin_config.name}"; known: {known}')
        return factory(plugin_config, context)


def check_plugin_data(plugin: PluginConfig, allowed: tuple[str, ...]) -> None:
    """Reject plugin_data keys a plugin does not know, naming the dotted path."""
    for key in sorted(plugin.plugin_data):
        if key not in allowed:
            raise ConfigError(f'unknown key "{plugin.path}.plugin_data.{key}"')


def _memory_key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    check_plugin_data(plugin, ())
    return MemoryKeyManager()


def _string_setting(plugin: PluginConfig, key: str) -> str | None:
    value = plugin.plugin_data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{plugin.path}.plugin_data.{key} must be a non-empty string")
    return value


# Where the disk KeyManager keeps its keys when its plugin_data names no place (under data_dir).
DEFAULT_KEYS_DIRECTORY = "keys"


def disk_key_directory(plugin: PluginConfig, context: PluginContext) -> Path:
    """Where the ``disk`` KeyManager keeps ``keys.json``.

    ``directory`` (SPIRE agent's setting) is used as is. ``keys_path`` (SPIRE server's setting)
    names a file; ours is always ``keys.json``, so ``keys_path = "/var/lib/x/keys.json"`` maps
    to the directory ``/var/lib/x``, and any other file name to ``/var/lib/x/<name>.d`` so two
    configured paths never share a file. Neither given: ``<data_dir>/keys``.
    """
    check_plugin_data(plugin, ("directory", "keys_path"))
    directory = _string_setting(plugin, "directory")
    keys_path = _string_setting(plugin, "keys_path")
    if directory and keys_path:
        raise ConfigError(f"{plugin.path}: give directory or keys_path, not both")
    if directory:
        chosen = Path(directory)
    elif keys_path:
        file = Path(keys_path)
        if file.name == DiskKeyManager.FILE_NAME:
            chosen = file.parent
        else:
            chosen = file.parent / f"{file.name}.d"
    elif context.data_dir is not None:
        chosen = context.data_dir / DEFAULT_KEYS_DIRECTORY
    else:
        raise ConfigError(f"{plugin.path}.plugin_data: directory is required")
    if not chosen.is_absolute() and context.base_dir is not None:
        chosen = context.base_dir / chosen
    return chosen


def _disk_key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    return DiskKeyManager(disk_key_directory(plugin, context))


KEY_MANAGERS: Registry[KeyManager] = Registry("KeyManager")
KEY_MANAGERS.register("memory", _memory_key_manager)
KEY_MANAGERS.register("disk", _disk_key_manager)

# Attestation methods register both halves from their own modules.
SERVER_NODE_ATTESTORS: Registry[ServerNodeAttestor] = Registry("NodeAttestor")
AGENT_NODE_ATTESTORS: Registry[AgentNodeAttestor] = Registry("NodeAttestor")
UPSTREAM_AUTHORITIES: Registry[UpstreamAuthority] = Registry("UpstreamAuthority")

#: Opens the key a URI names: a KeyManager holding it, and the key's id in that manager.
KeyUriOpener = Callable[[str], tuple[KeyManager, str]]
KEY_URI_OPENERS: dict[str, KeyUriOpener] = {}


def open_key_uri(uri: str) -> PrivateKey:
    """The signer for the key ``uri`` names, through the opener registered for its scheme."""
    scheme = uri.partition(":")[0]
    opener = KEY_URI_OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}:" for s in sorted(KEY_URI_OPENERS)) or "none"
        raise ConfigError(f"no key support for {scheme}: URIs in this build; known: {known}")
    manager, key_id = opener(uri)
    return manager.signer(key_id)
