"""Container ID and pod UID extraction from /proc/<pid>/cgroup, on the lines each runtime writes.

The lines are as the kernel shows them for a containerised process: Docker (cgroupfs and
systemd drivers), containerd and CRI-O under Kubernetes (cgroup v1 and v2, cgroupfs and
systemd drivers, inside a cgroup namespace), kind, Podman, and plain systemd slices.
"""

from __future__ import annotations

import pytest

from plastron.agent.workloadattestor.containerinfo import (
    ContainerInfo,
    container_info,
    parse_cgroups,
)
from plastron.errors import AttestationFailed

CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
CID2 = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
NODE = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
POD = "2c48913c-b29f-11e7-9350-020968147796"
POD_SYSTEMD = POD.replace("-", "_")
POD2 = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"

V1_CONTROLLERS = ("hugetlb", "devices", "pids", "memory", "cpu,cpuacct", "name=systemd")


def v1(path: str, *extra: str) -> str:
    lines = [f"{n}:{c}:{path}" for n, c in enumerate(V1_CONTROLLERS, start=1)]
    return "\n".join([*lines, *extra]) + "\n"


# (runtime, /proc/<pid>/cgroup text, expected container ID, expected pod UID)
IN_A_CONTAINER = [
    ("docker cgroupfs v1", v1(f"/docker/{CID}"), CID, None),
    ("docker systemd v2", f"0::/system.slice/docker-{CID}.scope\n", CID, None),
    ("docker cgroupfs v2", f"0::/docker/{CID}\n", CID, None),
    ("docker v1 with a root rdma hierarchy", v1(f"/docker/{CID}", "12:rdma:/"), CID, None),
    (
        "kubepods burstable cgroupfs v1 (docker/containerd)",
        v1(f"/kubepods/burstable/pod{POD}/{CID}"),
        CID,
        POD,
    ),
    (
        "kubepods besteffort cgroupfs v1",
        v1(f"/kubepods/besteffort/pod{POD}/{CID}"),
        CID,
        POD,
    ),
    (
        "kubepods guaranteed (no QoS level) cgroupfs v1",
        v1(f"/kubepods/pod{POD}/{CID}"),
        CID,
        POD,
    ),
    (
        "kubepods systemd v1, docker",
        v1(
            "/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{POD_SYSTEMD}.slice/docker-{CID}.scope"
        ),
        CID,
        POD,
    ),
    (
        "containerd systemd v2",
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope\n",
        CID,
        POD,
    ),
    (
        "containerd v2 inside a cgroup namespace, ':'-joined",
        f"0::/system.slice/containerd.service/kubepods-burstable-pod{POD_SYSTEMD}.slice"
        f":cri-containerd:{CID}\n",
        CID,
        POD,
    ),
    (
        "CRI-O systemd v1 (rdma at root, v2 line on crio.service)",
        v1(
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{POD2.replace('-', '_')}.slice/crio-{CID2}.scope",
            "3:rdma:/",
            "0::/system.slice/crio.service",
        ),
        CID2,
        POD2,
    ),
    (
        "CRI-O v2 seen from inside the pod's cgroup namespace",
        f"0::/../crio-{CID2}.scope\n",
        CID2,
        None,
    ),
    (
        "CRI-O systemd v2 with a conmon sub-cgroup",
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{POD_SYSTEMD}.slice/crio-{CID}.scope/container\n",
        CID,
        POD,
    ),
    (
        "kind: v1 lines name the pod, the v2 line only the node container",
        v1(
            f"/docker/{NODE}/kubepods/besteffort/pod{POD2}/{CID2}",
            f"0::/docker/{NODE}/system.slice/containerd.service",
        ),
        CID2,
        POD2,
    ),
    (
        "rootless podman v2",
        "0::/user.slice/user-1000.slice/user@1000.service/user.slice/"
        f"libpod-{CID}.scope/container\n",
        CID,
        None,
    ),
]

NOT_IN_A_CONTAINER = [
    ("systemd service v2", "0::/system.slice/sshd.service\n"),
    ("login session v2", "0::/user.slice/user-1000.slice/session-2.scope\n"),
    (
        "login session v1",
        "11:hugetlb:/\n10:devices:/user.slice\n9:pids:/user.slice/user-1000.slice\n"
        "1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n",
    ),
    ("root cgroup v2 (own cgroup namespace)", "0::/\n"),
    (
        "32 hex digits are not a container ID",
        "4:memory:/process_api/6010ca03627cba52801cd9003d74d80b\n0::/\n",
    ),
    ("65 hex digits are not a container ID", f"0::/docker/{CID}0\n"),
    ("pod directory without a container", f"0::/kubepods/burstable/pod{POD}\n"),
    ("empty file", ""),
]


@pytest.mark.parametrize(("runtime", "text", "container_id", "pod_uid"), IN_A_CONTAINER)
def test_container_and_pod_found(
    runtime: str, text: str, container_id: str, pod_uid: str | None
) -> None:
    cgroups = parse_cgroups(text)
    assert container_info(cgroups, want_pod_uid=True) == ContainerInfo(container_id, pod_uid)
    if NODE not in text:  # kind names two containers (test_docker_in_kind_names_two_containers)
        # docker asks only for the container: same ID, no pod UID
        assert container_info(cgroups) == ContainerInfo(container_id, None)


@pytest.mark.parametrize(("case", "text"), NOT_IN_A_CONTAINER)
def test_no_container(case: str, text: str) -> None:
    assert container_info(parse_cgroups(text), want_pod_uid=True) == ContainerInfo(None, None)


def test_two_container_ids_are_refused() -> None:
    text = f"1:cpu:/docker/{CID}\n2:memory:/docker/{CID2}\n"
    with pytest.raises(AttestationFailed, match="multiple container IDs found"):
        container_info(parse_cgroups(text))


def test_two_pod_uids_are_refused() -> None:
    text = f"1:cpu:/kubepods/pod{POD}/{CID}\n2:memory:/kubepods/pod{POD2}/{CID}\n"
    with pytest.raises(AttestationFailed, match="multiple pod UIDs found"):
        container_info(parse_cgroups(text), want_pod_uid=True)


def test_same_pod_two_containers_are_refused() -> None:
    text = f"1:cpu:/kubepods/pod{POD}/{CID}\n2:memory:/kubepods/pod{POD}/{CID2}\n"
    with pytest.raises(AttestationFailed, match="multiple container IDs found"):
        container_info(parse_cgroups(text), want_pod_uid=True)


def test_docker_in_kind_names_two_containers() -> None:
    # Without pod UIDs to prefer one line, the node's and the pod's containers conflict.
    text = v1(f"/docker/{NODE}/kubepods/besteffort/pod{POD2}/{CID2}", f"0::/docker/{NODE}/x")
    with pytest.raises(AttestationFailed, match="multiple container IDs found"):
        container_info(parse_cgroups(text))


@pytest.mark.parametrize("line", ["garbage", "1:cpu"])
def test_malformed_line(line: str) -> None:
    with pytest.raises(ValueError, match="':'-separated fields"):
        parse_cgroups(f"0::/\n{line}\n")


def test_path_may_contain_colons() -> None:
    assert parse_cgroups("0::/a:b:c\n")[0].path == "/a:b:c"
