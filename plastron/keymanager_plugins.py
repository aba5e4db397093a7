"""KeyManager ``memory`` and ``disk``: their factories and ``register``.

``memory`` takes no settings. ``disk`` takes ``directory`` (SPIRE agent's key) or ``keys_path``
(SPIRE server's key), see :func:`disk_key_directory`.
"""

from __future__ import annotations

from pathlib import Path

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.keymanager import DiskKeyManager, KeyManager, MemoryKeyManager
from plastron.plugins import PluginContext, Registries

# Where the disk KeyManager keeps its keys when its plugin_data names no place (under data_dir).
DEFAULT_KEYS_DIRECTORY = "keys"


def _check_memory(plugin: PluginConfig, context: PluginContext) -> None:
    plugin.settings().finish()


def _memory_key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    _check_memory(plugin, context)
    return MemoryKeyManager()


def disk_key_directory(plugin: PluginConfig, context: PluginContext) -> Path:
    """Where the ``disk`` KeyManager keeps ``keys.json``.

    ``directory`` (SPIRE agent's setting) is used as is. ``keys_path`` (SPIRE server's setting)
    names a file; ours is always ``keys.json``, so ``keys_path = "/var/lib/x/keys.json"`` maps
    to the directory ``/var/lib/x``, and any other file name to ``/var/lib/x/<name>.d`` so two
    configured paths never share a file. Neither given: ``<data_dir>/keys``.
    """
    settings = plugin.settings()
    directory = settings.optional_string("directory")
    keys_path = settings.optional_string("keys_path")
    settings.finish()
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


def _check_disk(plugin: PluginConfig, context: PluginContext) -> None:
    disk_key_directory(plugin, context)


def _disk_key_manager(plugin: PluginConfig, context: PluginContext) -> KeyManager:
    return DiskKeyManager(disk_key_directory(plugin, context))


def register(registries: Registries) -> None:
    registries.key_managers.register("memory", _memory_key_manager, check=_check_memory)
    registries.key_managers.register("disk", _disk_key_manager, check=_check_disk)
