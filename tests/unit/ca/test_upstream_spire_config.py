"""The spire UpstreamAuthority's settings: SPIRE's keys, the port as a string or a number,
relative socket paths from the config file's directory, and one precise error otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, load_plugins
from plastron.server.upstream.spire import SpireUpstreamAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.upstream import UpstreamBundleSource

TD = TrustDomain("example.org")
UPSTREAMS = load_plugins(["plastron.server.upstream.spire"]).upstream_authorities
GOOD = {"server_address": "upstream", "server_port": "8081", "workload_api_socket": "a.sock"}


def plugin(**changes: Any) -> PluginConfig:
    data = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    return PluginConfig("UpstreamAuthority", "spire", data)


def test_spire_keys_build_a_bundle_following_upstream(tmp_path: Path) -> None:
    context = PluginContext(trust_domain=TD, base_dir=tmp_path)
    for port in ("8081", 8081):
        upstream = UPSTREAMS.create(plugin(server_port=port), context)
        assert isinstance(upstream, SpireUpstreamAuthority)
        assert isinstance(upstream, UpstreamBundleSource)
        assert upstream._config.workload_api_socket == tmp_path / "a.sock"
        assert upstream._config.server_port == 8081


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"server_port": "0"}, "server_port must be a port 1-65535, got '0'"),
        ({"server_port": "eighty"}, "server_port must be a port 1-65535, got 'eighty'"),
        ({"server_port": True}, "server_port must be a port 1-65535, got True"),
        ({"server_port": None}, "server_port"),
        ({"server_address": ""}, "server_address must be a non-empty string"),
        ({"workload_api_socket": None}, "workload_api_socket"),
        ({"experimental_x": "1"}, "experimental_x"),
    ],
)
def test_bad_settings_are_refused_by_name(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UPSTREAMS.check(plugin(**changes), PluginContext(trust_domain=TD))


def test_the_trust_domain_is_needed() -> None:
    with pytest.raises(ConfigError, match="needs the trust domain"):
        UPSTREAMS.check(plugin(), PluginContext())
