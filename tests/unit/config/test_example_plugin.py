"""The worked example of docs/plugins/writing.md loads, reads its plugin_data and attests, so
the guide's code stays true."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from plastron.agent.config import parse_agent_config
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import load_plugins
from plastron.selector import Selector
from plastron.workloadattestor import WorkloadAttestor
from tests.docs.doc_blocks import block_tested_by

MODULES = ("plastron.agent.workloadattestor.unix", "tests.unit.config.example_cgroup_plugin")


def agent_config(plugin_data: str) -> str:
    return (
        'agent { trust_domain = "td.test"  data_dir = "/d"  server_address = "s"\n'
        "insecure_bootstrap = true }\n"
        'plugins { NodeAttestor "join_token" {}\n'
        f'WorkloadAttestor "cgroup" {{ plugin_data {{ {plugin_data} }} }} }}'
    )


def build(plugin_data: str, base_dir: Path | None = None) -> WorkloadAttestor:
    registries = load_plugins(MODULES)
    assert registries.workload_attestors.names() == ("cgroup", "unix")
    plugin = parse_agent_config(agent_config(plugin_data)).plugins.of_type("WorkloadAttestor")[0]
    return registries.workload_attestors.create(plugin, registries.context(base_dir=base_dir))


async def test_example_attests_this_process_from_the_real_proc() -> None:
    attestor = build("include_v1 = true")
    assert isinstance(attestor, WorkloadAttestor)
    selectors = await attestor.attest(os.getpid())
    assert selectors and all(s.type == "cgroup" for s in selectors)


async def test_operator_block_of_the_guide_builds_the_example() -> None:
    """The guide's ``WorkloadAttestor "cgroup"`` block, as an operator writes it."""
    block = block_tested_by(__file__, "test_operator_block_of_the_guide_builds_the_example")
    config = (
        'agent { trust_domain = "td.test"  data_dir = "/d"  server_address = "s"\n'
        "insecure_bootstrap = true }\n"
        + block.text.replace("plugins {", 'plugins {\n    NodeAttestor "join_token" {}', 1)
    )
    registries = load_plugins(MODULES)
    plugin = parse_agent_config(config).plugins.of_type("WorkloadAttestor")[0]
    attestor = registries.workload_attestors.create(plugin, registries.context())
    selectors = await attestor.attest(os.getpid())
    assert selectors and all(s.type == "cgroup" for s in selectors)


async def test_example_reads_a_relative_proc_root_from_the_config_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "fakeproc" / "42").mkdir(parents=True)
    (tmp_path / "fakeproc" / "42" / "cgroup").write_text(
        "3:cpu,cpuacct:/system.slice/web.service\n0::/system.slice/web.service\n"
    )
    attestor = build('proc_root = "fakeproc"', base_dir=tmp_path)
    assert await attestor.attest(42) == [Selector("cgroup", "path:/system.slice/web.service")]
    with pytest.raises(AttestationFailed, match="process 43 is gone"):
        await attestor.attest(43)


def test_example_refuses_unknown_and_mistyped_settings() -> None:
    where = "plugins.WorkloadAttestor.cgroup.plugin_data"
    with pytest.raises(ConfigError, match=re.escape(f'unknown key "{where}.include_v2"')):
        build("include_v2 = true")
    with pytest.raises(ConfigError, match=re.escape(f"{where}.include_v1 must be true or false")):
        build('include_v1 = "yes"')
