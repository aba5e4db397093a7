"""Which container (and Kubernetes pod) a process runs in, from its /proc/<pid>/cgroup.

Shared by the ``docker`` and ``k8s`` workload attestors. The algorithm is SPIRE's container
locator: in each cgroup path, walk the segments from the end until one holds a 64-hex-digit
container ID (``docker-<id>.scope``, ``cri-containerd-<id>.scope``, ``crio-<id>.scope``, a bare
``<id>``), then keep walking back for a ``pod<uid>`` segment (``-`` in the UID escaped to ``_``
under the systemd cgroup driver). Works on cgroup v1 lines (``<n>:<controllers>:<path>``) and
the v2 unified line (``0::<path>``).

Only the cgroup file is read: the kernel writes it and the workload cannot change it. SPIRE
falls back to /proc/<pid>/mountinfo when the cgroup file names no container; that file is the
workload's own mount table (a bind mount of another container's cgroup directory would name
that container), so Plastron does not read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from plastron.errors import AttestationFailed

# /proc/<pid>/cgroup is one line per hierarchy (about a dozen); anything huge is not it.
MAX_CGROUP_FILE_BYTES = 64 * 1024

# A pod UID as the kubelet renders it in cgroup names: "pod" + UUID, with '-' (cgroupfs
# driver) or '_' (systemd driver, which reserves '-') between the groups.
_POD_UID = re.compile(
    r"\bpod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})\b",
    re.ASCII,
)
# A container ID is, by every runtime's convention, 64 hex digits.
_CONTAINER_ID = re.compile(r"\b([0-9a-fA-F]{64})\b", re.ASCII)


@dataclass(frozen=True)
class Cgroup:
    """One line of /proc/<pid>/cgroup: ``hierarchy-ID:controller-list:cgroup-path``."""

    hierarchy_id: str
    controllers: str
    path: str


@dataclass(frozen=True)
class ContainerInfo:
    """The container a process runs in; both None for a process in no container."""

    container_id: str | None
    pod_uid: str | None


def parse_cgroups(text: str) -> list[Cgroup]:
    """The lines of a /proc/<pid>/cgroup file; ValueError naming a line without 3 fields."""
    cgroups = []
    for line in text.splitlines():
        if not line:
            continue
        fields = line.split(":", 2)
        if len(fields) < 3:
            raise ValueError(f"cgroup line {line!r} has {len(fields)} ':'-separated fields, not 3")
        cgroups.append(Cgroup(fields[0], fields[1], fields[2]))
    return cgroups


def read_cgroups(proc_root: Path, pid: int, plugin: str) -> list[Cgroup]:
    """The cgroups of ``pid`` from ``<proc_root>/<pid>/cgroup``; a vanished process or a
    malformed file is AttestationFailed naming ``plugin``."""
    path = proc_root / str(pid) / "cgroup"
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CGROUP_FILE_BYTES + 1)
    except OSError as exc:
        raise AttestationFailed(f"{plugin}: process {pid} is gone ({exc.strerror})") from exc
    if len(raw) > MAX_CGROUP_FILE_BYTES:
        raise AttestationFailed(f"{plugin}: {path} is larger than {MAX_CGROUP_FILE_BYTES} bytes")
    try:
        return parse_cgroups(raw.decode("utf-8", "replace"))
    except ValueError as exc:
        raise AttestationFailed(f"{plugin}: {path}: {exc}") from None


def _split_last(path: str) -> tuple[str, str]:
    """("/a/b", "c") for "/a/b/c": the path without its last segment, and that segment."""
    rest, _, segment = path.rpartition("/")
    return rest, segment


def _ids_in_path(path: str, want_pod_uid: bool) -> ContainerInfo:
    """The container ID (and pod UID) one cgroup path names, walking segments from the end."""
    rest, segment = _split_last(path)
    container_id = None
    while segment:
        found = _CONTAINER_ID.search(segment)
        if found:
            container_id = found.group(1)
            # The pod UID may share the segment, before the ID (some runtimes join them
            # with ':'), so keep what precedes it.
            segment = segment[: found.start(1)]
            break
        rest, segment = _split_last(rest)
    if container_id is None:
        return ContainerInfo(None, None)
    if not want_pod_uid:
        return ContainerInfo(container_id, None)
    if not segment:
        rest, segment = _split_last(rest)
    while segment:
        found = _POD_UID.search(segment)
        if found:
            return ContainerInfo(container_id, found.group(1).replace("_", "-"))
        rest, segment = _split_last(rest)
    return ContainerInfo(container_id, None)


def container_info(cgroups: list[Cgroup], *, want_pod_uid: bool = False) -> ContainerInfo:
    """The one container (and pod) all of ``cgroups`` agree on.

    A path naming a pod wins over paths that name none (kind on a Docker host: the v2 line
    names the node's container, the v1 lines the pod's), and a path naming no container
    (``3:rdma:/``) says nothing. Two different container IDs or pod UIDs among the remaining
    paths are AttestationFailed: picking one could pick the wrong workload.
    """
    container_id: str | None = None
    pod_uid: str | None = None
    for cgroup in cgroups:
        found = _ids_in_path(cgroup.path, want_pod_uid)
        if found.container_id is None or (pod_uid is not None and found.pod_uid is None):
            continue
        if pod_uid is None and found.pod_uid is not None:
            pod_uid, container_id = found.pod_uid, found.container_id
            continue
        if found.pod_uid != pod_uid:
            raise AttestationFailed(f"multiple pod UIDs found ({pod_uid!r}, {found.pod_uid!r})")
        if container_id is not None and found.container_id != container_id:
            raise AttestationFailed(
                f"multiple container IDs found ({container_id!r}, {found.container_id!r})"
            )
        container_id = found.container_id
    return ContainerInfo(container_id, pod_uid)
