"""WorkloadAttestor ``cgroup``: the worked example of docs/plugins/writing.md (tests only).

Selectors from /proc/<pid>/cgroup: ``cgroup:path:<path>`` for the unified (v2) line
``0::<path>``, and with ``include_v1 = true`` also ``cgroup:<controllers>:<path>`` for each v1
line ``<n>:<controllers>:<path>``. ``proc_root`` (default ``/proc``; a relative path is taken
from the config file's directory) exists so tests can point it at a tree of their own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, InvalidSelector
from plastron.plugins import PluginContext, Registries
from plastron.selector import Selector

NAME = "cgroup"
MAX_CGROUP_FILE_BYTES = 64 * 1024  # a few hundred bytes in practice; refuse anything huge


@dataclass(frozen=True)
class CgroupConfig:
    include_v1: bool = False
    proc_root: Path = Path("/proc")

    @classmethod
    def from_settings(cls, settings: Block, context: PluginContext) -> CgroupConfig:
        config = cls(
            include_v1=settings.boolean("include_v1", cls.include_v1),
            proc_root=context.resolve(settings.string("proc_root", str(cls.proc_root))),
        )
        settings.finish()  # any other key is an error naming it
        return config


class CgroupWorkloadAttestor:
    name = NAME

    def __init__(self, config: CgroupConfig) -> None:
        self._config = config

    async def attest(self, pid: int) -> list[Selector]:
        # reading /proc blocks: keep it off the event loop
        return await asyncio.to_thread(self._attest, pid)

    def _attest(self, pid: int) -> list[Selector]:
        path = self._config.proc_root / str(pid) / "cgroup"
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_CGROUP_FILE_BYTES + 1)
        except OSError as exc:
            raise AttestationFailed(f"cgroup: process {pid} is gone ({exc.strerror})") from None
        if len(data) > MAX_CGROUP_FILE_BYTES:
            raise AttestationFailed(f"cgroup: {path} is larger than {MAX_CGROUP_FILE_BYTES} bytes")
        selectors: list[Selector] = []
        for line in data.decode("utf-8", "replace").splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, cgroup_path = rest.partition(":")
            try:
                if hierarchy == "0" and not controllers:
                    selectors.append(Selector(NAME, f"path:{cgroup_path}"))
                elif self._config.include_v1 and controllers:
                    selectors.append(Selector(NAME, f"{controllers}:{cgroup_path}"))
            except InvalidSelector as exc:
                raise AttestationFailed(f"cgroup: process {pid}: {exc}") from None
        return selectors


def create(plugin: PluginConfig, context: PluginContext) -> CgroupWorkloadAttestor:
    return CgroupWorkloadAttestor(CgroupConfig.from_settings(plugin.settings(), context))


def register(registries: Registries) -> None:
    registries.workload_attestors.register(NAME, create)
