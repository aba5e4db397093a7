"""The ``unix`` workload attestor: SPIRE's unix selectors from /proc/<pid>.

Selectors (as SPIRE on Linux): ``unix:uid``, ``unix:user``, ``unix:gid``, ``unix:group``,
``unix:supplementary_gid``, ``unix:supplementary_group``; with ``discover_workload_path``
also ``unix:path`` (the executable) and ``unix:sha256`` (hex digest of the executable, skipped
when ``workload_size_limit`` < 0, refused when the file is larger than a positive limit).
uid/gid are the effective ids, as SPIRE takes them.
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from plastron.agent import procfs
from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed
from plastron.plugins import PluginContext, Registries
from plastron.selector import Selector

SELECTOR_TYPE = "unix"
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UnixAttestorConfig:
    discover_workload_path: bool = False
    # 0: no limit; < 0: never hash; > 0: refuse to hash a larger binary.
    workload_size_limit: int = 0

    @classmethod
    def from_settings(cls, settings: Block) -> UnixAttestorConfig:
        config = cls(
            discover_workload_path=settings.boolean(
                "discover_workload_path", cls.discover_workload_path
            ),
            workload_size_limit=settings.integer(
                "workload_size_limit", cls.workload_size_limit, -(2**63), 2**63 - 1
            ),
        )
        settings.finish()
        return config


@dataclass(frozen=True)
class _ProcessIds:
    uid: int
    gid: int
    groups: tuple[int, ...]


def _start_time(proc: Path, pid: int) -> str:
    """Distinguishes a PID from a later process reusing it."""
    try:
        raw = (proc / "stat").read_bytes()
    except OSError as exc:
        raise AttestationFailed(f"unix: process {pid} is gone ({exc.strerror})") from exc
    try:
        return procfs.stat_start_time(procfs.stat_fields(raw))
    except procfs.MalformedProcFile as exc:
        raise AttestationFailed(f"unix: /proc/{pid}/stat is malformed: {exc}") from None


def _parse_status(text: str, pid: int) -> _ProcessIds:
    fields = procfs.status_fields(text, ("Uid", "Gid", "Groups"))
    try:
        uids, gids = fields["Uid"], fields["Gid"]
        # Effective id (second column), as SPIRE's attestor uses.
        uid = int(uids[1] if len(uids) > 1 else uids[0])
        gid = int(gids[1] if len(gids) > 1 else gids[0])
        groups = tuple(int(g) for g in fields.get("Groups", []))
    except (KeyError, IndexError, ValueError) as exc:
        raise AttestationFailed(f"unix: /proc/{pid}/status has no usable Uid/Gid lines") from exc
    return _ProcessIds(uid, gid, groups)


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


class UnixWorkloadAttestor:
    name = "unix"

    def __init__(self, config: UnixAttestorConfig | None = None, proc_root: str = "/proc") -> None:
        self._config = config or UnixAttestorConfig()
        self._proc_root = Path(proc_root)

    async def attest(self, pid: int) -> list[Selector]:
        return await asyncio.to_thread(self.attest_sync, pid)

    def attest_sync(self, pid: int) -> list[Selector]:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise AttestationFailed(f"unix: invalid process id {pid!r}")
        proc = self._proc_root / str(pid)
        started = _start_time(proc, pid)
        try:
            with (proc / "status").open("rb") as fh:
                status = fh.read(procfs.MAX_STATUS_BYTES).decode("utf-8", "replace")
        except OSError as exc:
            raise AttestationFailed(f"unix: process {pid} is gone ({exc.strerror})") from exc
        ids = _parse_status(status, pid)
        selectors = self._id_selectors(ids)
        if self._config.discover_workload_path:
            selectors += self._path_selectors(proc, pid)
        # The PID may have exited (and been reused) while we read: then the facts may be another
        # process's, so refuse rather than hand out selectors.
        if _start_time(proc, pid) != started:
            raise AttestationFailed(f"unix: process {pid} exited during attestation")
        return selectors

    @staticmethod
    def _id_selectors(ids: _ProcessIds) -> list[Selector]:
        out = [Selector(SELECTOR_TYPE, f"uid:{ids.uid}")]
        user = _user_name(ids.uid)
        if user:
            out.append(Selector(SELECTOR_TYPE, f"user:{user}"))
        out.append(Selector(SELECTOR_TYPE, f"gid:{ids.gid}"))
        group = _group_name(ids.gid)
        if group:
            out.append(Selector(SELECTOR_TYPE, f"group:{group}"))
        for gid in sorted(set(ids.groups)):
            out.append(Selector(SELECTOR_TYPE, f"supplementary_gid:{gid}"))
            name = _group_name(gid)
            if name:
                out.append(Selector(SELECTOR_TYPE, f"supplementary_group:{name}"))
        return out

    def _path_selectors(self, proc: Path, pid: int) -> list[Selector]:
        try:
            exe = os.readlink(proc / "exe")
        except OSError as exc:
            raise AttestationFailed(
                f"unix: cannot read the executable path of process {pid} ({exc.strerror})"
            ) from exc
        out = [Selector(SELECTOR_TYPE, f"path:{exe}")]
        limit = self._config.workload_size_limit
        if limit >= 0:
            out.append(Selector(SELECTOR_TYPE, f"sha256:{self._hash(proc, pid, exe, limit)}"))
        return out

    @staticmethod
    def _hash(proc: Path, pid: int, exe: str, limit: int) -> str:
        # Open through /proc/<pid>/exe: the binary the process runs, even if the path was
        # replaced or deleted since.
        digest = hashlib.sha256()
        try:
            with (proc / "exe").open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if limit > 0 and size > limit:
                    raise AttestationFailed(
                        f"unix: workload binary {exe!r} is {size} bytes, over "
                        f"workload_size_limit {limit}"
                    )
                read = 0
                while chunk := fh.read(_HASH_CHUNK):
                    read += len(chunk)
                    if limit > 0 and read > limit:
                        raise AttestationFailed(
                            f"unix: workload binary {exe!r} grew past workload_size_limit {limit}"
                        )
                    digest.update(chunk)
        except OSError as exc:
            raise AttestationFailed(
                f"unix: cannot hash the executable of process {pid} ({exc.strerror})"
            ) from exc
        return digest.hexdigest()


def _check(plugin: PluginConfig, context: PluginContext) -> None:
    UnixAttestorConfig.from_settings(plugin.settings())


def _create(plugin: PluginConfig, context: PluginContext) -> UnixWorkloadAttestor:
    return UnixWorkloadAttestor(UnixAttestorConfig.from_settings(plugin.settings()))


def register(registries: Registries) -> None:
    registries.workload_attestors.register(SELECTOR_TYPE, _create, check=_check)
