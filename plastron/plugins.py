"""Plugins: one protocol and one registry per plugin type, one loader, one context.

Every plugin type is wired the same way:

- its protocol lives in core: KeyManager (:mod:`plastron.keymanager`), NodeAttestor halves
  (:mod:`plastron.attestors.base`), UpstreamAuthority (:mod:`plastron.upstream`),
  WorkloadAttestor (:mod:`plastron.workloadattestor`), DataStore (:mod:`plastron.datastore`);
  optional capabilities are runtime-checkable protocols next to it (``Closeable``,
  ``BlockingKeyManager``...), tested with ``isinstance``;
- a plugin module, in whichever room holds its code, defines ``register(registries)``, which
  adds its factories by name to :class:`Registries`. A runtime lists its modules and calls
  :func:`load_plugins` once; nothing registers by being imported;
- a plugin that needs an optional dependency registers with ``extra="hsm"`` (see
  :mod:`plastron.extras`) and its module imports that dependency only inside the factory: the
  registry checks the extra first, so a configuration naming the plugin on an install without
  it fails with one line naming the extra, and no other configuration imports it;
- a factory ``(PluginConfig, PluginContext) -> plugin`` reads its ``plugin_data`` and raises
  ConfigError naming the key (``plugins.KeyManager.disk.plugin_data.directory ...``); a
  DataStore's factory returns an opener (opening a store connects and migrates: async);
- a checker ``(PluginConfig, PluginContext) -> None``, registered beside the factory, does the
  factory's reading without its side effects: every ``plugin_data`` key and value, the files it
  names (readable, parseable, private where they hold secrets), but no key created, no token
  logged in to, no network. ``validate`` runs the checkers, and so does ``run`` before it builds
  anything, so a config ``validate`` passes does not fail ``run`` for a config reason;
- the runtime builds one :class:`PluginContext` (:meth:`Registries.context`): the trust domain,
  ``data_dir``, the clock, ``base_dir`` (the config file's directory, for relative paths) and
  the host services (:mod:`plastron.host_services`).

A signing key may also be named by URI (x509pop's ``private_key_uri = "pkcs11:..."``): the room
that owns the URI scheme registers a :data:`KeyUriOpener` for it, which opens a KeyManager
holding that key, so core uses the key without knowing where it lives.

docs/plugins/writing.md walks through a complete plugin.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from plastron.attestors.base import AgentNodeAttestor, ServerNodeAttestor
from plastron.clock import Clock, SystemClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.datastore import DataStoreOpener
from plastron.errors import ConfigError
from plastron.extras import require_extra
from plastron.host_services import HostServices
from plastron.keymanager import KeyManager, PrivateKey
from plastron.spiffe.ids import TrustDomain
from plastron.upstream import UpstreamAuthority
from plastron.workloadattestor import WorkloadAttestor

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Opens the key a URI names: a KeyManager holding it, and the key's id in that manager.
KeyUriOpener = Callable[[str], tuple[KeyManager, str]]


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may need from its host besides its own plugin_data."""

    trust_domain: TrustDomain | None = None
    data_dir: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    # Where relative paths in plugin_data resolve from (the config file's directory).
    base_dir: Path | None = None
    services: HostServices = field(default_factory=HostServices)
    key_uri_openers: Mapping[str, KeyUriOpener] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def open_key_uri(self, uri: str) -> PrivateKey:
        """The signer for the key ``uri`` names, through the opener registered for its
        scheme."""
        scheme = uri.partition(":")[0]
        opener = self.key_uri_openers.get(scheme)
        if opener is None:
            known = ", ".join(f"{s}:" for s in sorted(self.key_uri_openers)) or "none"
            raise ConfigError(f"no key support for {scheme}: URIs in this build; known: {known}")
        manager, key_id = opener(uri)
        return manager.signer(key_id)

    def resolve(self, path: str | Path) -> Path:
        """A file path from plugin_data: a relative one is taken from ``base_dir``."""
        p = Path(path)
        return self.base_dir / p if self.base_dir is not None and not p.is_absolute() else p


Factory = Callable[[PluginConfig, PluginContext], T]
Checker = Callable[[PluginConfig, PluginContext], None]


class Registry(Generic[T]):
    """Factories for one plugin type, by name."""

    def __init__(self, plugin_type: str) -> None:
        self.plugin_type = plugin_type
        self._factories: dict[str, Factory[T]] = {}
        self._extras: dict[str, str] = {}
        self._checkers: dict[str, Checker] = {}

    def __repr__(self) -> str:
        return f"Registry({self.plugin_type!r}, names={self.names()})"

    def register(
        self,
        name: str,
        factory: Factory[T],
        *,
        extra: str | None = None,
        check: Checker | None = None,
    ) -> None:
        """Add ``factory`` under ``name``; ``extra`` names the pip extra it needs, ``check``
        reads the plugin's settings as ``factory`` does, without side effects."""
        if not name:
            raise ValueError(f"{self.plugin_type}: plugin name must not be empty")
        if name in self._factories:
            raise ValueError(f'{self.plugin_type} "{name}" is already registered')
        self._factories[name] = factory
        if extra is not None:
            self._extras[name] = extra
        if check is not None:
            self._checkers[name] = check

    def extra(self, name: str) -> str | None:
        """The pip extra the plugin ``name`` needs, if any."""
        return self._extras.get(name)

    def has_checker(self, name: str) -> bool:
        return name in self._checkers

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def check(
        self, plugin_config: PluginConfig, context: PluginContext | None = None
    ) -> Factory[T]:
        """The factory for ``plugin_config``, after checking that this build has the plugin and
        that its extra is installed; ConfigError (MissingExtra) naming what is missing. With a
        ``context``, the plugin's checker also reads its settings (without side effects)."""
        if plugin_config.type != self.plugin_type:
            raise ConfigError(
                f"{plugin_config.path}: a {plugin_config.type} cannot be built by the"
                f" {self.plugin_type} registry"
            )
        factory = self._factories.get(plugin_config.name)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f'unknown {self.plugin_type} "{plugin_config.name}"; known: {known}')
        extra = self._extras.get(plugin_config.name)
        if extra is not None:
            require_extra(extra, f'{self.plugin_type} "{plugin_config.name}"')
        checker = self._checkers.get(plugin_config.name)
        if context is not None and checker is not None:
            checker(plugin_config, context)
        return factory

    def create(self, plugin_config: PluginConfig, context: PluginContext) -> T:
        """Build the plugin ``plugin_config`` names (see :meth:`check` for the errors)."""
        return self.check(plugin_config)(plugin_config, context)


@dataclass
class Registries:
    """One registry per plugin type, filled by the plugin modules' ``register`` functions."""

    key_managers: Registry[KeyManager] = field(default_factory=lambda: Registry("KeyManager"))
    server_node_attestors: Registry[ServerNodeAttestor] = field(
        default_factory=lambda: Registry("NodeAttestor")
    )
    agent_node_attestors: Registry[AgentNodeAttestor] = field(
        default_factory=lambda: Registry("NodeAttestor")
    )
    upstream_authorities: Registry[UpstreamAuthority] = field(
        default_factory=lambda: Registry("UpstreamAuthority")
    )
    workload_attestors: Registry[WorkloadAttestor] = field(
        default_factory=lambda: Registry("WorkloadAttestor")
    )
    # create() checks a store's settings; awaiting the opener it returns opens the store
    datastores: Registry[DataStoreOpener] = field(default_factory=lambda: Registry("DataStore"))
    key_uri_openers: dict[str, KeyUriOpener] = field(default_factory=dict)

    def context(
        self,
        *,
        trust_domain: TrustDomain | None = None,
        data_dir: Path | None = None,
        base_dir: Path | None = None,
        clock: Clock | None = None,
        services: HostServices | None = None,
    ) -> PluginContext:
        """The context every plugin of one runtime is built with."""
        return PluginContext(
            trust_domain=trust_domain,
            data_dir=data_dir,
            clock=clock or SystemClock(),
            base_dir=base_dir,
            services=services or HostServices(),
            key_uri_openers=MappingProxyType(dict(self.key_uri_openers)),
        )


# The modules that register plugins for both the server and the agent (KeyManagers, both halves
# of every NodeAttestor); each side lists these and its own. None imports an optional
# dependency: a plugin that needs one names its extra (plastron.extras), checked when it is
# configured.
SHARED_PLUGIN_MODULES = (
    "plastron.keymanager_plugins",
    "plastron.attestors.join_token",
    "plastron.attestors.x509pop.plugin",
    "plastron.attestors.gcp_iit.plugin",
    "plastron.attestors.aws_iid.plugin",
    "plastron.attestors.azure_msi.plugin",
    "plastron.attestors.k8s_psat.plugin",
    "plastron.attestors.aws_iam.plugin",
    "plastron.tpm.plugin",
    "plastron.hsm.plugin",
)


class PluginModule(Protocol):
    """What :func:`load_plugins` needs of a plugin module."""

    def register(self, registries: Registries) -> None: ...


def load_plugins(modules: Iterable[str]) -> Registries:
    """Fresh registries filled by each named module's ``register(registries)``.

    A module this build lacks is skipped; one whose optional dependency is missing (libtss2, a
    PKCS#11 binding) is skipped with a warning, so that plugin is unknown rather than the
    runtime failing to start.
    """
    registries = Registries()
    for name in modules:
        try:
            module: PluginModule = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                log.debug("plugin module not in this build module=%s", name)
                continue
            log.warning("plugin module unavailable module=%s error=%s", name, exc)
            continue
        except ImportError as exc:
            log.warning("plugin module unavailable module=%s error=%s", name, exc)
            continue
        module.register(registries)
    return registries


def check_enabled_plugins(
    plugins: Iterable[PluginConfig],
    by_type: Mapping[str, Registry[Any]],
    context: PluginContext,
) -> None:
    """Check every enabled plugin whose type one of ``by_type`` builds: this build has it, with
    its extra, and its checker passes. Nothing is built."""
    for plugin in plugins:
        registry = by_type.get(plugin.type)
        if registry is not None and plugin.enabled:
            registry.check(plugin, context)
