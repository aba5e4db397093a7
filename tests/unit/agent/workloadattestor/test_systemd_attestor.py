"""WorkloadAttestor "systemd": the unit from the caller's cgroup, its unit file from the search
path. This host runs no systemd, so the cgroup lines are those systemd writes, as table data,
and the unit directories a tree of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from plastron.agent.workloadattestor.containerinfo import parse_cgroups
from plastron.agent.workloadattestor.systemd import (
    SystemdAttestorConfig,
    SystemdWorkloadAttestor,
    create,
    fragment_path,
    systemd_cgroup,
    unit_of_cgroup_path,
)
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext
from plastron.selector import Selector
from tests.unit.agent.workloadattestor.conftest import CgroupProcess

CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"

UNITS = [
    ("0::/system.slice/nginx.service\n", "nginx.service"),
    ("0::/system.slice/system-getty.slice/getty@tty1.service\n", "getty@tty1.service"),
    ("0::/user.slice/user-1000.slice/session-2.scope\n", "session-2.scope"),
    ("0::/init.scope\n", "init.scope"),
    ("0::/\n", "-.slice"),
    ("0::/user.slice\n", "user.slice"),
    (f"0::/system.slice/docker-{CID}.scope\n", f"docker-{CID}.scope"),
    # a delegated unit's own sub-cgroups do not change its identity
    (
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/sshd.service\n",
        "user@1000.service",
    ),
    (f"0::/system.slice/docker-{CID}.scope/nginx.service\n", f"docker-{CID}.scope"),
    # a cgroup systemd does not manage belongs to the slice above it
    (f"0::/docker/{CID}\n", "-.slice"),
    (f"0::/kubepods.slice/kubepods-burstable.slice/x/{CID}\n", "kubepods-burstable.slice"),
    # systemd escapes unit cgroup names that could clash with kernel files
    ("0::/system.slice/_cgroup.procs.service\n", "cgroup.procs.service"),
    # cgroup v1: the name=systemd hierarchy, whatever the controllers say
    (
        "5:memory:/system.slice/other.service\n1:name=systemd:/system.slice/cron.service\n0::/\n",
        "cron.service",
    ),
]


@pytest.mark.parametrize(("text", "unit"), UNITS)
def test_unit_of_cgroup(text: str, unit: str) -> None:
    cgroup = systemd_cgroup(parse_cgroups(text))
    assert cgroup is not None
    assert unit_of_cgroup_path(cgroup.path) == unit


def test_outside_the_agents_cgroup_namespace_nothing_is_told() -> None:
    assert unit_of_cgroup_path("/../../system.slice/nginx.service") is None


def test_no_systemd_hierarchy() -> None:
    assert systemd_cgroup(parse_cgroups("4:memory:/x\n3:cpu:/x\n")) is None


@pytest.fixture
def unit_dirs(tmp_path: Path) -> tuple[str, ...]:
    etc, lib, transient = tmp_path / "etc", tmp_path / "lib", tmp_path / "transient"
    for d in (etc, lib, transient):
        d.mkdir()
    (lib / "nginx.service").write_text("[Service]\n")
    (etc / "nginx.service").write_text("[Service]\n")  # overrides the packaged one
    (lib / "getty@.service").write_text("[Service]\n")
    (lib / "cron.service").write_text("[Service]\n")
    (etc / "crond.service").symlink_to(lib / "cron.service")  # an alias
    (transient / "run-u42.service").write_text("[Service]\n")
    return (str(etc), str(transient), str(lib))


def test_fragment_path(unit_dirs: tuple[str, ...]) -> None:
    etc, transient, lib = unit_dirs
    assert fragment_path("nginx.service", unit_dirs) == f"{etc}/nginx.service"
    assert fragment_path("getty@tty1.service", unit_dirs) == f"{lib}/getty@.service"
    assert fragment_path("crond.service", unit_dirs) == f"{lib}/cron.service"
    assert fragment_path("run-u42.service", unit_dirs) == f"{transient}/run-u42.service"
    assert fragment_path("session-2.scope", unit_dirs) is None


async def test_attest_a_process(
    unit_dirs: tuple[str, ...], process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup("0::/system.slice/nginx.service\n")
    plugin = SystemdWorkloadAttestor(SystemdAttestorConfig(unit_dirs), proc_root=root)
    assert await plugin.attest(pid) == [
        Selector("systemd", f"fragment_path:{unit_dirs[0]}/nginx.service"),
        Selector("systemd", "id:nginx.service"),
    ]
    pid, root = process_in_cgroup("0::/user.slice/user-1000.slice/session-7.scope\n")
    plugin = SystemdWorkloadAttestor(SystemdAttestorConfig(unit_dirs), proc_root=root)
    assert await plugin.attest(pid) == [Selector("systemd", "id:session-7.scope")]


async def test_vanished_process_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AttestationFailed, match="systemd: process 4242 is gone"):
        await SystemdWorkloadAttestor(proc_root=tmp_path).attest(4242)


def test_takes_no_settings_and_needs_systemd(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        create(PluginConfig("WorkloadAttestor", "systemd", {"x": 1}), PluginContext())
    with pytest.raises(ConfigError, match="this host is not running systemd"):
        create(
            PluginConfig("WorkloadAttestor", "systemd", {}),
            PluginContext(),
            booted_marker=str(tmp_path / "absent"),
        )
    assert create(
        PluginConfig("WorkloadAttestor", "systemd", {}),
        PluginContext(),
        booted_marker=str(tmp_path),
    )
