"""WorkloadAttestor "k8s" against a fake kubelet on loopback (read-only and secure port).

The attested processes are real; their cgroup files come from a proc root of the test's own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plastron.agent.workloadattestor.k8s import K8sWorkloadAttestor, parse_config
from plastron.configs.block import Block
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext
from plastron.selector import Selector
from tests.container_fakes import FakeKubelet, KubeletTls, kube_pod
from tests.unit.agent.workloadattestor.conftest import CgroupProcess

CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
CID2 = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
CID3 = "5e1c2b5b6d7a4a35b3e7f1f2b5c0c93a3a4cb0bd6aa5b2f5b8a5ab1a3f3e2d1c"
POD = "2c48913c-b29f-11e7-9350-020968147796"
POD2 = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
WEB = ("web", "ghcr.io/acme/web:1.4", f"ghcr.io/acme/web@sha256:{'ef' * 32}", f"containerd://{CID}")
ENVOY = (
    "envoy",
    "envoyproxy/envoy:v1.29",
    f"docker.io/envoyproxy/envoy@sha256:{'12' * 32}",
    f"containerd://{CID2}",
)
INIT = (
    "init",
    "busybox:1.36",
    f"docker.io/library/busybox@sha256:{'34' * 32}",
    "containerd://" + CID3,
)
CGROUP = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n"
)


def web_pod(uid: str = POD, containers: list[Any] | None = None) -> dict[str, Any]:
    return kube_pod(
        uid,
        "web-7d9c-x2",
        "shop",
        [WEB, ENVOY] if containers is None else containers,
        init_containers=[INIT],
        labels={"app": "web", "tier": "front"},
        owner=("ReplicaSet", "web-7d9c", "6f1c0a9e-0000-4000-8000-000000000001"),
        service_account="web-sa",
        node="node-1",
    )


def k8s(*values: str) -> list[Selector]:
    return sorted(Selector("k8s", v) for v in values)


POD_SELECTORS = [
    "sa:web-sa",
    "ns:shop",
    "node-name:node-1",
    f"pod-uid:{POD}",
    "pod-name:web-7d9c-x2",
    "pod-image-count:2",
    "pod-init-image-count:1",
    *(f"pod-image:{i}" for c in (WEB, ENVOY) for i in c[1:3]),
    *(f"pod-init-image:{i}" for i in INIT[1:3]),
    "pod-label:app:web",
    "pod-label:tier:front",
    "pod-owner:ReplicaSet:web-7d9c",
    "pod-owner-uid:ReplicaSet:6f1c0a9e-0000-4000-8000-000000000001",
]
WEB_SELECTORS = k8s(
    *POD_SELECTORS, "container-name:web", *(f"container-image:{i}" for i in WEB[1:3])
)


@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    fake = FakeKubelet()
    fake.pods = [web_pod()]
    yield fake
    fake.close()


def make(data: dict[str, Any], proc_root: Path) -> K8sWorkloadAttestor:
    settings = Block(
        {"poll_retry_interval": "10ms", **data}, "plugins.WorkloadAttestor.k8s.plugin_data"
    )
    return K8sWorkloadAttestor(parse_config(settings, PluginContext()), proc_root=proc_root)


def read_only(kubelet: FakeKubelet, proc_root: Path, **data: Any) -> K8sWorkloadAttestor:
    return make({"kubelet_read_only_port": kubelet.port, **data}, proc_root)


async def test_pod_and_container_selectors(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup(CGROUP)
    assert sorted(await read_only(kubelet, root).attest(pid)) == WEB_SELECTORS
    assert kubelet.paths() == ["/pods"]


async def test_init_container(kubelet: FakeKubelet, process_in_cgroup: CgroupProcess) -> None:
    pid, root = process_in_cgroup(f"0::/kubepods/besteffort/pod{POD}/{CID3}\n")
    got = await read_only(kubelet, root).attest(pid)
    assert Selector("k8s", "container-name:init") in got
    assert Selector("k8s", f"container-image:{INIT[1]}") in got


async def test_process_in_no_container_gets_nothing_and_the_kubelet_is_not_asked(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup("0::/system.slice/sshd.service\n")
    assert await read_only(kubelet, root).attest(pid) == []
    assert kubelet.paths() == []


async def test_pod_not_yet_listed_is_polled_for(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    kubelet.hidden_for = 3
    pid, root = process_in_cgroup(CGROUP)
    assert sorted(await read_only(kubelet, root).attest(pid)) == WEB_SELECTORS
    assert kubelet.paths() == ["/pods"] * 4


async def test_gives_up_after_max_poll_attempts(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    kubelet.pods = []
    pid, root = process_in_cgroup(CGROUP)
    plugin = read_only(kubelet, root, max_poll_attempts=3)
    with pytest.raises(
        AttestationFailed,
        match=f"container {CID} in pod {POD} is not in the kubelet's pod list after 3 attempts",
    ):
        await plugin.attest(pid)
    assert kubelet.paths() == ["/pods"] * 3


async def test_container_without_a_runtime_id_yet(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    starting = (*WEB[:3], "")
    kubelet.pods = [web_pod(containers=[starting, ENVOY])]
    pid, root = process_in_cgroup(CGROUP)
    with pytest.raises(AttestationFailed, match="not in the kubelet's pod list"):
        await read_only(kubelet, root, max_poll_attempts=2).attest(pid)
    # disable_container_selectors: the pod (known from the cgroup) is enough
    plugin = read_only(kubelet, root, max_poll_attempts=2, disable_container_selectors=True)
    got = await plugin.attest(pid)
    assert not any(s.value.startswith("container-") for s in got)
    assert Selector("k8s", "sa:web-sa") in got


async def test_pod_uid_from_the_cgroup_chooses_among_pods_listing_the_container(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    # Security: another pod whose status claims the caller's container ID is not chosen when
    # the cgroup names the caller's pod, and when the cgroup names no pod both are refused.
    impostor = web_pod(uid=POD2)
    impostor["metadata"]["namespace"] = "kube-system"
    kubelet.pods = [impostor, web_pod()]
    pid, root = process_in_cgroup(CGROUP)
    assert sorted(await read_only(kubelet, root).attest(pid)) == WEB_SELECTORS
    pid, root = process_in_cgroup(f"0::/../cri-containerd-{CID}.scope\n")
    with pytest.raises(AttestationFailed, match=f"two pods list container {CID}"):
        await read_only(kubelet, root).attest(pid)


async def test_concurrent_callers_share_one_pod_list(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess, tmp_path: Path
) -> None:
    pid, root = process_in_cgroup(CGROUP)
    plugin = make({"kubelet_read_only_port": kubelet.port, "poll_retry_interval": "1h"}, root)
    results = await asyncio.gather(*(plugin.attest(pid) for _ in range(8)))
    assert all(sorted(r) == WEB_SELECTORS for r in results)
    assert kubelet.paths() == ["/pods"]


async def test_malformed_pod_list_is_refused(
    kubelet: FakeKubelet, process_in_cgroup: CgroupProcess
) -> None:
    bad = web_pod()
    bad["metadata"]["labels"] = {"app": 7}
    kubelet.pods = [bad]
    pid, root = process_in_cgroup(CGROUP)
    with pytest.raises(AttestationFailed, match=r"metadata\.labels has a value that is not"):
        await read_only(kubelet, root).attest(pid)


# --- the secure port ---------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> KubeletTls:
    (tmp_path / "tls").mkdir()
    return KubeletTls(tmp_path / "tls")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token-1\n")
    return path


def secure(port: int, tls: KubeletTls, root: Path, **data: Any) -> K8sWorkloadAttestor:
    base = {
        "kubelet_secure_port": port,
        "kubelet_ca_path": str(tls.paths["ca"]),
        "node_name_env": "PLASTRON_TEST_NO_SUCH_VARIABLE",
    }
    return make({**base, "max_poll_attempts": 1, **data}, root)


async def test_secure_port_with_token_and_node_name(
    tls: KubeletTls, token_file: Path, process_in_cgroup: CgroupProcess
) -> None:
    fake = FakeKubelet(tls, token="sa-token-1")
    fake.pods = [web_pod()]
    try:
        pid, root = process_in_cgroup(CGROUP)
        plugin = secure(fake.port, tls, root, token_path=str(token_file), node_name="localhost")
        assert sorted(await plugin.attest(pid)) == WEB_SELECTORS
        assert fake.seen[0].headers["authorization"] == "Bearer sa-token-1"
        fake.token = "sa-token-2"
        with pytest.raises(AttestationFailed, match="status 401"):
            await plugin.attest(pid)
    finally:
        fake.close()


async def test_rotated_token_is_read_again(
    tls: KubeletTls, token_file: Path, process_in_cgroup: CgroupProcess
) -> None:
    fake = FakeKubelet(tls, token="sa-token-1")
    fake.pods = [web_pod()]
    try:
        pid, root = process_in_cgroup(CGROUP)
        plugin = secure(fake.port, tls, root, token_path=str(token_file), reload_interval="1us")
        assert await plugin.attest(pid)
        token_file.write_text("sa-token-2")
        fake.token = "sa-token-2"
        assert sorted(await plugin.attest(pid)) == WEB_SELECTORS
    finally:
        fake.close()


async def test_secure_port_on_loopback_verifies_the_chain_without_a_name(
    tmp_path: Path, token_file: Path, process_in_cgroup: CgroupProcess
) -> None:
    # no node name: 127.0.0.1, whose certificate names another host; the chain still counts
    (tmp_path / "other").mkdir()
    tls = KubeletTls(tmp_path / "other", server_names=("node-7.cluster.internal",))
    fake = FakeKubelet(tls)
    fake.pods = [web_pod()]
    try:
        pid, root = process_in_cgroup(CGROUP)
        plugin = secure(fake.port, tls, root, token_path=str(token_file))
        assert sorted(await plugin.attest(pid)) == WEB_SELECTORS
        named = secure(fake.port, tls, root, token_path=str(token_file), node_name="localhost")
        with pytest.raises(AttestationFailed, match="certificate verification failed"):
            await named.attest(pid)
    finally:
        fake.close()


async def test_kubelet_certificate_from_another_ca_is_refused(
    tmp_path: Path, tls: KubeletTls, token_file: Path, process_in_cgroup: CgroupProcess
) -> None:
    # Security: a listener on the kubelet's port without a certificate from kubelet_ca_path
    # gets neither the token nor the chance to choose the caller's selectors.
    (tmp_path / "rogue").mkdir()
    rogue = FakeKubelet(KubeletTls(tmp_path / "rogue"))
    rogue.pods = [web_pod()]
    try:
        pid, root = process_in_cgroup(CGROUP)
        named = secure(rogue.port, tls, root, token_path=str(token_file), node_name="localhost")
        with pytest.raises(AttestationFailed, match="certificate verification failed"):
            await named.attest(pid)
        on_loopback = secure(rogue.port, tls, root, token_path=str(token_file))
        with pytest.raises(AttestationFailed, match="certificate verification failed"):
            await on_loopback.attest(pid)
        assert rogue.seen == []
        skip = secure(
            rogue.port, tls, root, token_path=str(token_file), skip_kubelet_verification=True
        )
        assert sorted(await skip.attest(pid)) == WEB_SELECTORS
    finally:
        rogue.close()


async def test_client_certificate_authentication(
    tls: KubeletTls, process_in_cgroup: CgroupProcess
) -> None:
    fake = FakeKubelet(tls, require_client_cert=True)
    fake.pods = [web_pod()]
    try:
        pid, root = process_in_cgroup(CGROUP)
        plugin = secure(
            fake.port,
            tls,
            root,
            certificate_path=str(tls.paths["client"]),
            private_key_path=str(tls.paths["client-key"]),
        )
        assert sorted(await plugin.attest(pid)) == WEB_SELECTORS
        anonymous = secure(fake.port, tls, root, use_anonymous_authentication=True)
        with pytest.raises(AttestationFailed, match="k8s: no pod list after 1 attempts: GET"):
            await anonymous.attest(pid)
    finally:
        fake.close()


# --- configuration -----------------------------------------------------------------------


def test_node_name_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MY_NODE_NAME", "node-9")
    settings = Block({"kubelet_read_only_port": 10255}, "k8s")
    assert parse_config(settings, PluginContext()).kubelet.node_name == "node-9"
    monkeypatch.setenv("KUBE_NODE", "node-3")
    settings = Block({"kubelet_read_only_port": 10255, "node_name_env": "KUBE_NODE"}, "k8s")
    assert parse_config(settings, PluginContext()).kubelet.node_name == "node-3"
    settings = Block(
        {"kubelet_read_only_port": 1, "node_name": "n", "node_name_env": "KUBE_NODE"}, "k8s"
    )
    assert parse_config(settings, PluginContext()).kubelet.node_name == "n"


def test_defaults() -> None:
    config = parse_config(Block({}, "k8s"), PluginContext())
    assert (config.max_poll_attempts, config.poll_retry_interval) == (60, 0.5)
    kubelet = config.kubelet
    assert (kubelet.secure, kubelet.port, kubelet.reload_interval) == (True, 10250, 60.0)
    assert str(kubelet.token_path) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert str(kubelet.ca_path) == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kubelet_read_only_port": 1, "kubelet_secure_port": 2}, "both the read-only and"),
        ({"certificate_path": "c.pem"}, "certificate_path and private_key_path go together"),
        ({"use_anonymous_authentication": True, "token_path": "t"}, "cannot be used with"),
        ({"enable_namespace_labels": True}, "SPIRE option Plastron does not support"),
        ({"experimental": {}}, "SPIRE option Plastron does not support"),
        ({"use_new_container_locator": False}, "only the current container locator"),
        ({"kubelet_secure_port": 70000}, "between 0 and 65535"),
        ({"pod_annotations": True}, "unknown key"),
    ],
)
def test_config_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(Block(data, "k8s"), PluginContext())


def test_missing_credentials_fail_at_start(tmp_path: Path, tls: KubeletTls) -> None:
    with pytest.raises(ConfigError, match=f"k8s: unable to load token {tmp_path}/absent"):
        make(
            {"kubelet_ca_path": str(tls.paths["ca"]), "token_path": str(tmp_path / "absent")},
            tmp_path,
        )
    with pytest.raises(ConfigError, match="k8s: unable to load kubelet CA /var/run/secrets"):
        make({"token_path": str(tls.paths["ca"])}, tmp_path)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="unable to parse kubelet CA"):
        make(
            {"kubelet_ca_path": str(tmp_path / "junk.pem"), "use_anonymous_authentication": True},
            tmp_path,
        )
    assert os.path.exists(tls.paths["ca"])
