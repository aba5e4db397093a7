from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plastron.agent.workloadattestor.unix import UnixAttestorConfig, UnixWorkloadAttestor
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.selector import Selector


def _values(selectors: list[Selector], kind: str) -> list[str]:
    prefix = kind + ":"
    return [s.value[len(prefix) :] for s in selectors if s.value.startswith(prefix)]


async def test_own_process_ids_and_names() -> None:
    selectors = await UnixWorkloadAttestor().attest(os.getpid())
    assert all(s.type == "unix" for s in selectors)
    assert _values(selectors, "uid") == [str(os.geteuid())]
    assert _values(selectors, "gid") == [str(os.getegid())]
    assert _values(selectors, "user") == [pwd.getpwuid(os.geteuid()).pw_name]
    assert _values(selectors, "group") == [grp.getgrgid(os.getegid()).gr_name]
    assert sorted(_values(selectors, "supplementary_gid")) == sorted(
        str(g) for g in set(os.getgroups())
    )
    assert _values(selectors, "path") == []


async def test_other_user_process_gets_its_own_uid() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    child = subprocess.Popen(
        ["/bin/cat"],
        stdin=subprocess.PIPE,
        user=65534,
        group=65534,
        extra_groups=[],
    )
    try:
        selectors = await UnixWorkloadAttestor().attest(child.pid)
    finally:
        child.communicate(b"")
    assert _values(selectors, "uid") == ["65534"]
    assert _values(selectors, "gid") == ["65534"]
    assert _values(selectors, "supplementary_gid") == []


async def test_path_and_sha256_of_the_running_binary() -> None:
    attestor = UnixWorkloadAttestor(UnixAttestorConfig(discover_workload_path=True))
    selectors = await attestor.attest(os.getpid())
    exe = os.readlink("/proc/self/exe")
    assert _values(selectors, "path") == [exe]
    assert _values(selectors, "sha256") == [hashlib.sha256(Path(exe).read_bytes()).hexdigest()]


async def test_negative_size_limit_skips_hash() -> None:
    config = UnixAttestorConfig(discover_workload_path=True, workload_size_limit=-1)
    selectors = await UnixWorkloadAttestor(config).attest(os.getpid())
    assert _values(selectors, "path") and not _values(selectors, "sha256")


async def test_binary_over_size_limit_is_refused() -> None:
    config = UnixAttestorConfig(discover_workload_path=True, workload_size_limit=1024)
    with pytest.raises(AttestationFailed, match="workload_size_limit 1024"):
        await UnixWorkloadAttestor(config).attest(os.getpid())


async def test_exited_process_is_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(AttestationFailed, match=str(child.pid)):
        await UnixWorkloadAttestor().attest(child.pid)


@pytest.mark.parametrize("pid", [0, -1, True])
async def test_invalid_pid_is_refused(pid: int) -> None:
    with pytest.raises(AttestationFailed, match="invalid process id"):
        await UnixWorkloadAttestor().attest(pid)


class _ExitMidway(UnixWorkloadAttestor):
    """Kills the process between reading its ids and finishing: the race the check covers."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        super().__init__(UnixAttestorConfig(discover_workload_path=True, workload_size_limit=-1))
        self._child = child

    def _path_selectors(self, proc: Path, pid: int) -> list[Selector]:
        self._child.kill()
        self._child.wait()
        return []


async def test_process_exiting_during_attestation_is_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(AttestationFailed, match=r"gone|exited"):
        await _ExitMidway(child).attest(child.pid)


def _config(data: dict[str, object]) -> UnixAttestorConfig:
    return UnixAttestorConfig.from_settings(
        PluginConfig("WorkloadAttestor", "unix", data).settings()
    )


def test_config_rejects_unknown_and_mistyped_keys() -> None:
    assert _config({"discover_workload_path": True, "workload_size_limit": 5}) == (
        UnixAttestorConfig(True, 5)
    )
    where = "plugins.WorkloadAttestor.unix.plugin_data"
    with pytest.raises(ConfigError, match=re.escape(f'unknown key "{where}.bogus"')):
        _config({"bogus": 1})
    with pytest.raises(ConfigError, match=re.escape(f"{where}.discover_workload_path must be")):
        _config({"discover_workload_path": "yes"})
    with pytest.raises(ConfigError, match=re.escape(f"{where}.workload_size_limit must be an")):
        _config({"workload_size_limit": "five"})
