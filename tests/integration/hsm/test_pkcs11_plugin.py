"""KeyManager and UpstreamAuthority "pkcs11" built through the plugin registries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from softhsm_token import SoftHsmToken

import plastron.hsm.plugin
from plastron.clock import ManualClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.upstream import Pkcs11UpstreamAuthority
from plastron.keymanager import (
    Closeable,
    ForgettingKeyManager,
    KeyType,
    MemoryKeyManager,
    WorkerOpenableKeyManager,
    close_if_closeable,
    is_blocking,
    worker_opener,
)
from plastron.plugins import PluginContext
from plastron.server.plugin_loading import load_server_plugins
from plastron.spiffe.ids import TrustDomain

pytestmark = pytest.mark.softhsm
TD = TrustDomain("example.org")
REGISTRIES = load_server_plugins()


def _km(token: SoftHsmToken, data_dir: Path, **extra: object) -> Pkcs11KeyManager:
    plugin = PluginConfig("KeyManager", "pkcs11", plugin_data=token.plugin_data(**extra))
    km = REGISTRIES.key_managers.create(plugin, PluginContext(trust_domain=TD, data_dir=data_dir))
    assert isinstance(km, Pkcs11KeyManager)
    return km


def test_registry_builds_keymanager_with_value_identifier(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    km = _km(softhsm_token, tmp_path, key_identifier_value="server-7")
    try:
        assert km.label_for("x509-CA-A") == "plastron/example.org/server-7/x509-CA-A"
    finally:
        km.close()
    assert list(tmp_path.iterdir()) == []


def test_pkcs11_capabilities_are_declared_by_protocol(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    """The pkcs11 KeyManager blocks, forgets cached keys, reopens in workers and closes; the
    memory one does none of it. Callers find this by isinstance, never by getattr."""
    km = _km(softhsm_token, tmp_path, key_identifier_value="server-7")
    try:
        assert is_blocking(km)
        assert isinstance(km, ForgettingKeyManager)
        assert isinstance(km, WorkerOpenableKeyManager) and worker_opener(km) is not None
        memory = MemoryKeyManager()
        assert not is_blocking(memory) and worker_opener(memory) is None
        assert not isinstance(memory, ForgettingKeyManager)
        assert isinstance(km, Closeable) and not isinstance(memory, Closeable)
    finally:
        close_if_closeable(km)


def test_identifier_file_is_created_once_and_reused(
    softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    first = _km(softhsm_token, tmp_path)
    try:
        public = first.generate_key("x509-CA-A", KeyType.EC_P256)
        label = first.label_for("x509-CA-A")
    finally:
        first.close()
    ident = tmp_path / plastron.hsm.plugin.DEFAULT_IDENTIFIER_FILE
    assert ident.stat().st_mode & 0o077 == 0
    second = _km(softhsm_token, tmp_path)  # a restart finds the same labels and key
    try:
        assert second.label_for("x509-CA-A") == label
        assert second.get_public_key("x509-CA-A") == public
    finally:
        second.close()


def test_identifier_rules(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        _km(softhsm_token, tmp_path, key_identifier_value="a", key_identifier_file="/x")
    with pytest.raises(ConfigError, match="key identifier 'a/b'"):
        _km(softhsm_token, tmp_path, key_identifier_value="a/b")
    unknown = 'unknown key "plugins.KeyManager.pkcs11.plugin_data.keys_path"'
    with pytest.raises(ConfigError, match=re.escape(unknown)):
        _km(softhsm_token, tmp_path, keys_path="/x")


def test_registry_builds_upstream(softhsm_token: SoftHsmToken) -> None:
    plugin = PluginConfig(
        "UpstreamAuthority", "pkcs11", plugin_data=softhsm_token.plugin_data(root_ttl="720h")
    )
    context = PluginContext(trust_domain=TD, clock=ManualClock())
    upstream = REGISTRIES.upstream_authorities.create(plugin, context)
    assert isinstance(upstream, Pkcs11UpstreamAuthority)
    upstream.close()
