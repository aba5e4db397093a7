"""The ``systemd`` workload attestor: the systemd unit a caller runs in.

Selectors (SPIRE's): ``systemd:id:<unit>`` (``nginx.service``, ``session-2.scope``) and
``systemd:fragment_path:<path>`` (the unit file, ``/usr/lib/systemd/system/nginx.service``).

SPIRE asks systemd over D-Bus (``GetUnitByPID``, then the unit's ``Id`` and ``FragmentPath``).
Plastron reads the unit from the caller's cgroup instead, the way systemd itself maps a cgroup
to its unit: below the slices (``system.slice``, ``user-1000.slice``), the first segment that
is a unit name is the unit, and a process in a slice's own cgroup (or in a cgroup systemd does
not manage) belongs to the innermost slice (``-.slice`` at the root). Only systemd and root can
create cgroups above a delegated unit, so what a delegated unit's processes create below it
(``user@1000.service/app.slice/x.service``) does not change the answer (``user@1000.service``).
The fragment path is where the system manager's unit search path holds that unit's file
(instances fall back to their template, ``getty@.service``); it is left out when no file
is found (scopes, slices created at run time).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from plastron.agent.workloadattestor.containerinfo import Cgroup, read_cgroups
from plastron.agent.workloadattestor.selector_values import selectors_of
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, Registries
from plastron.selector import Selector

NAME = "systemd"
log = logging.getLogger("plastron.agent.workloadattestor")

_UNIT_TYPES = "service|socket|target|device|mount|automount|swap|timer|path|slice|scope"
_UNIT_NAME = re.compile(rf"[A-Za-z0-9:_.\\@-]+\.(?:{_UNIT_TYPES})", re.ASCII)
ROOT_SLICE = "-.slice"

# The system manager's unit search path, highest priority first (systemd.unit(5)).
SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
)


def _unescape(segment: str) -> str:
    """systemd prefixes '_' to a unit's cgroup name that could clash with kernel files."""
    return segment[1:] if segment.startswith("_") else segment


def unit_of_cgroup_path(path: str) -> str | None:
    """The unit owning the cgroup ``path``; None when the path is outside the agent's cgroup
    namespace (``/../…``), where nothing can be told from it."""
    innermost_slice = ROOT_SLICE
    for segment in path.split("/"):
        if not segment:
            continue
        if segment == "..":
            return None
        name = _unescape(segment)
        if not _UNIT_NAME.fullmatch(name):
            break  # a cgroup systemd does not manage: it belongs to the slice above
        if not name.endswith(".slice"):
            return name
        innermost_slice = name
    return innermost_slice


def systemd_cgroup(cgroups: list[Cgroup]) -> Cgroup | None:
    """The hierarchy systemd tracks units in: v1's ``name=systemd`` line, else the v2 line."""
    for cgroup in cgroups:
        if "name=systemd" in cgroup.controllers.split(","):
            return cgroup
    return next((c for c in cgroups if c.hierarchy_id == "0" and not c.controllers), None)


def fragment_path(unit: str, unit_dirs: tuple[str, ...]) -> str | None:
    """The file defining ``unit`` in the search path (an instance's template if it has none
    of its own), with symlinks (aliases) resolved."""
    names = [unit]
    prefix, at, rest = unit.partition("@")
    if at and rest.partition(".")[0]:
        names.append(f"{prefix}@.{unit.rpartition('.')[2]}")
    for name in names:
        for directory in unit_dirs:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                return os.path.realpath(candidate)
    return None


@dataclass(frozen=True)
class SystemdAttestorConfig:
    unit_dirs: tuple[str, ...] = SYSTEM_UNIT_DIRS


class SystemdWorkloadAttestor:
    name = NAME

    def __init__(
        self,
        config: SystemdAttestorConfig | None = None,
        *,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._config = config or SystemdAttestorConfig()
        self._proc_root = proc_root

    async def attest(self, pid: int) -> list[Selector]:
        return await asyncio.to_thread(self._attest, pid)

    def _attest(self, pid: int) -> list[Selector]:
        cgroup = systemd_cgroup(read_cgroups(self._proc_root, pid, NAME))
        unit = unit_of_cgroup_path(cgroup.path) if cgroup is not None else None
        if unit is None:
            log.warning("%s: the unit of process %d cannot be told from its cgroup", NAME, pid)
            return []
        values = [f"id:{unit}"]
        path = fragment_path(unit, self._config.unit_dirs)
        if path is not None:
            values.append(f"fragment_path:{path}")
        return selectors_of(NAME, values)


def create(
    plugin: PluginConfig, context: PluginContext, *, booted_marker: str = "/run/systemd/system"
) -> SystemdWorkloadAttestor:
    plugin.settings().finish()  # as SPIRE's, the plugin takes no settings
    # sd_booted(): without systemd every cgroup path would read as "-.slice"
    if not os.path.isdir(booted_marker):
        raise ConfigError(
            f'WorkloadAttestor "{NAME}": this host is not running systemd ({booted_marker} '
            "does not exist)"
        )
    return SystemdWorkloadAttestor()


def check(plugin: PluginConfig, context: PluginContext) -> None:
    create(plugin, context)  # settings and the host check; opens nothing


def register(registries: Registries) -> None:
    registries.workload_attestors.register(NAME, create, check=check)
