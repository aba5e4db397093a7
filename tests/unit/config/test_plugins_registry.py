"""Plugin registries: build by name, refuse unknown names, and the memory/disk KeyManagers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from plastron.agent.config import parse_agent_config
from plastron.agent.plugin_loading import agent_plugins
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.keymanager import DiskKeyManager, KeyManager, KeyType, MemoryKeyManager
from plastron.keymanager_plugins import disk_key_directory
from plastron.plugins import PluginContext, Registries, Registry, load_plugins
from plastron.server.config import parse_server_config
from plastron.server.plugin_loading import load_server_plugins

KEY_MANAGERS = load_plugins(["plastron.keymanager_plugins"]).key_managers


class Greeter:
    def __init__(self, word: str) -> None:
        self.word = word


def test_registry_builds_by_name_and_lists_known_names_on_error() -> None:
    registry: Registry[Greeter] = Registry("NodeAttestor")
    registry.register("x509pop", lambda cfg, ctx: Greeter(str(cfg.plugin_data["w"])))
    registry.register("join_token", lambda cfg, ctx: Greeter("token"))
    built = registry.create(PluginConfig("NodeAttestor", "x509pop", {"w": "hi"}), PluginContext())
    assert built.word == "hi"
    assert registry.names() == ("join_token", "x509pop")
    assert "x509pop" in registry
    with pytest.raises(ConfigError, match='unknown NodeAttestor "foo"; known: join_token, x509pop'):
        registry.create(PluginConfig("NodeAttestor", "foo"), PluginContext())
    with pytest.raises(ConfigError, match="cannot be built by the NodeAttestor registry"):
        registry.create(PluginConfig("KeyManager", "x509pop"), PluginContext())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x509pop", lambda cfg, ctx: Greeter(""))


def test_empty_registry_says_none_known() -> None:
    registry: Registry[Greeter] = Registry("WorkloadAttestor")
    with pytest.raises(ConfigError, match='unknown WorkloadAttestor "unix"; known: none'):
        registry.create(PluginConfig("WorkloadAttestor", "unix"), PluginContext())


def test_memory_key_manager_from_config() -> None:
    config = parse_agent_config(
        'agent { trust_domain = "td.test"  data_dir = "/d"  server_address = "s"\n'
        "insecure_bootstrap = true }\n"
        'plugins { NodeAttestor "join_token" {}\n KeyManager "memory" { plugin_data {} } }'
    )
    assert config.key_manager is not None
    km = KEY_MANAGERS.create(config.key_manager, PluginContext(data_dir=config.data_dir))
    assert isinstance(km, MemoryKeyManager)
    assert isinstance(km, KeyManager)


def test_memory_key_manager_rejects_plugin_data() -> None:
    with pytest.raises(
        ConfigError, match=re.escape('unknown key "plugins.KeyManager.memory.plugin_data.x"')
    ):
        KEY_MANAGERS.create(PluginConfig("KeyManager", "memory", {"x": 1}), PluginContext())


def test_disk_key_manager_from_server_config(tmp_path: Path) -> None:
    keys_json = tmp_path / "server" / "keys.json"
    config = parse_server_config(
        f'server {{ trust_domain = "td.test"  data_dir = "{tmp_path}" }}\n'
        'plugins { NodeAttestor "join_token" {}\n'
        f'KeyManager "disk" {{ plugin_data {{ keys_path = "{keys_json}" }} }} }}'
    )
    assert config.key_manager is not None
    km = KEY_MANAGERS.create(config.key_manager, PluginContext(data_dir=config.data_dir))
    assert isinstance(km, DiskKeyManager)
    km.generate_key("x509-CA-A", KeyType.EC_P256)
    assert keys_json.is_file()  # SPIRE's keys_path names exactly the file we write


def disk(data: dict[str, object]) -> PluginConfig:
    return PluginConfig("KeyManager", "disk", data)


def test_disk_directory_mapping(tmp_path: Path) -> None:
    ctx = PluginContext(data_dir=tmp_path / "data")
    assert disk_key_directory(disk({"directory": "/var/lib/a"}), ctx) == Path("/var/lib/a")
    assert disk_key_directory(disk({"keys_path": "/var/lib/b/keys.json"}), ctx) == Path(
        "/var/lib/b"
    )
    assert disk_key_directory(disk({"keys_path": "/var/lib/b/ca.json"}), ctx) == Path(
        "/var/lib/b/ca.json.d"
    )
    assert disk_key_directory(disk({}), ctx) == tmp_path / "data" / "keys"
    relative = PluginContext(base_dir=Path("/etc/plastron"))
    assert disk_key_directory(disk({"directory": "keys"}), relative) == Path("/etc/plastron/keys")


def test_disk_plugin_data_errors() -> None:
    ctx = PluginContext()
    with pytest.raises(ConfigError, match="directory or keys_path, not both"):
        disk_key_directory(disk({"directory": "/a", "keys_path": "/b/keys.json"}), ctx)
    with pytest.raises(
        ConfigError, match=re.escape("plugins.KeyManager.disk.plugin_data.directory must be")
    ):
        disk_key_directory(disk({"directory": 5}), ctx)
    with pytest.raises(ConfigError, match="directory is required"):
        disk_key_directory(disk({}), ctx)
    with pytest.raises(
        ConfigError, match=re.escape('unknown key "plugins.KeyManager.disk.plugin_data.dir"')
    ):
        disk_key_directory(disk({"dir": "/a"}), ctx)


def test_each_runtime_loads_its_plugins_explicitly() -> None:
    """register(registries) of each listed module fills fresh registries: nothing is registered
    by importing a module, and two loads share no state."""
    from plastron.agent.plugin_loading import AGENT_PLUGIN_MODULES  # noqa: PLC0415
    from plastron.server.plugin_loading import load_server_plugins  # noqa: PLC0415

    server = load_server_plugins()
    assert set(server.server_node_attestors.names()) >= {"join_token", "x509pop"}
    assert set(server.key_managers.names()) >= {"memory", "disk"}
    assert "disk" in server.upstream_authorities
    agent = load_plugins(AGENT_PLUGIN_MODULES)
    assert set(agent.workload_attestors.names()) >= {"unix", "docker", "k8s", "systemd"}
    assert set(agent.agent_node_attestors.names()) >= {"join_token", "x509pop"}
    assert agent.upstream_authorities.names() == ()
    assert load_server_plugins().key_managers is not server.key_managers
    assert Registries().key_managers.names() == ()


def test_a_module_missing_from_the_build_is_skipped() -> None:
    registries = load_plugins(["plastron.no_such_plugin", "plastron.keymanager_plugins"])
    assert registries.key_managers.names() == ("disk", "memory")


def test_join_token_reaches_its_state_through_host_services() -> None:
    from plastron.host_services import HostServices  # noqa: PLC0415
    from plastron.spiffe.ids import TrustDomain  # noqa: PLC0415

    registries = load_plugins(["plastron.attestors.join_token"])
    plugin = PluginConfig("NodeAttestor", "join_token")
    with pytest.raises(ConfigError, match=re.escape("needs -joinToken or agent.join_token")):
        registries.agent_node_attestors.create(plugin, registries.context())
    agent = registries.agent_node_attestors.create(
        plugin, registries.context(services=HostServices(join_token="tok-1"))
    )
    assert "tok-1" not in repr(agent)
    with pytest.raises(ConfigError, match="needs the trust domain and tokens"):
        registries.server_node_attestors.create(plugin, registries.context())

    async def consume(token: str) -> None:
        return None

    server = registries.server_node_attestors.create(
        plugin,
        registries.context(
            trust_domain=TrustDomain("td.test"),
            services=HostServices(consume_join_token=consume),
        ),
    )
    assert server.name == "join_token"
    with pytest.raises(
        ConfigError, match=re.escape('unknown key "plugins.NodeAttestor.join_token')
    ):
        registries.agent_node_attestors.create(
            PluginConfig("NodeAttestor", "join_token", {"x": 1}), registries.context()
        )


def test_unknown_workload_attestor_names_the_known_ones() -> None:
    from plastron.agent.plugin_loading import agent_plugins  # noqa: PLC0415

    known = ", ".join(agent_plugins().workload_attestors.names())
    assert "unix" in known
    with pytest.raises(ConfigError, match=f'unknown WorkloadAttestor "dockr"; known: {known}$'):
        agent_plugins().workload_attestors.create(
            PluginConfig("WorkloadAttestor", "dockr"), agent_plugins().context()
        )


@pytest.mark.parametrize("runtime", ["server", "agent"])
def test_every_plugin_has_a_side_effect_free_checker(runtime: str) -> None:
    """validate runs each plugin's checker; a plugin without one would pass validate on
    settings its factory refuses at run."""
    registries = load_server_plugins() if runtime == "server" else agent_plugins()
    attestors = registries.server_node_attestors
    if runtime == "agent":
        attestors = registries.agent_node_attestors
    registries_of_runtime: list[Registry[Any]] = [
        registries.key_managers,
        attestors,
        registries.upstream_authorities,
        registries.workload_attestors,
    ]
    if runtime == "server":
        registries_of_runtime.append(registries.datastores)
    for registry in registries_of_runtime:
        missing = [name for name in registry.names() if not registry.has_checker(name)]
        assert not missing, f"{registry.plugin_type}: no checker for {missing}"
