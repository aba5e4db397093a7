"""WorkloadAttestor "docker" against a fake Docker Engine on a unix socket.

The attested process is real; its cgroup file comes from a proc root of the test's own.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from plastron.agent.workloadattestor.docker import DockerConfig, DockerWorkloadAttestor
from plastron.configs.block import Block
from plastron.errors import AttestationFailed, ConfigError
from plastron.selector import Selector
from tests.container_fakes import FakeDockerEngine, docker_image, docker_inspect
from tests.unit.agent.workloadattestor.conftest import CgroupProcess

CID = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
OTHER = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
IMAGE = "ghcr.io/acme/web:1.4"
IMAGE_ID = "sha256:" + "cd" * 32
IN_CONTAINER = f"0::/system.slice/docker-{CID}.scope\n"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeDockerEngine]:
    fake = FakeDockerEngine(tmp_path / "docker.sock")
    fake.containers[CID] = docker_inspect(
        CID, IMAGE, {"com.acme.app": "web", "tier": "front:end"}, ["PATH=/usr/bin", "ROLE=api"]
    )
    fake.images[IMAGE] = docker_image(IMAGE_ID, [f"ghcr.io/acme/web@sha256:{'ef' * 32}"])
    yield fake
    fake.close()


def attestor(
    engine: FakeDockerEngine, proc_root: Path, version: str | None = None
) -> DockerWorkloadAttestor:
    config = DockerConfig(f"unix://{engine.socket_path}", version)
    return DockerWorkloadAttestor(config, proc_root=proc_root, retry_backoffs=(0.0, 0.0, 0.0))


def docker(*values: str) -> list[Selector]:
    return sorted(Selector("docker", v) for v in values)


EXPECTED = docker(
    "label:com.acme.app:web",
    "label:tier:front:end",
    "env:PATH=/usr/bin",
    "env:ROLE=api",
    f"image_id:{IMAGE}",
    f"image_config_digest:{IMAGE_ID}",
)


async def test_container_selectors(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup(IN_CONTAINER)
    assert sorted(await attestor(engine, root).attest(pid)) == EXPECTED
    assert engine.paths() == [f"/containers/{CID}/json", f"/images/{IMAGE}/json"]


async def test_cgroup_v1_docker_lines(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    text = "".join(f"{n}:{c}:/docker/{CID}\n" for n, c in enumerate(("cpu", "memory"), 1))
    pid, root = process_in_cgroup(text + "3:rdma:/\n")
    assert sorted(await attestor(engine, root).attest(pid)) == EXPECTED


async def test_api_version_prefix(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup(IN_CONTAINER)
    assert sorted(await attestor(engine, root, "1.43").attest(pid)) == EXPECTED
    assert engine.paths() == [f"/v1.43/containers/{CID}/json", f"/v1.43/images/{IMAGE}/json"]


async def test_process_in_no_container_gets_nothing_and_the_daemon_is_not_asked(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n")
    assert await attestor(engine, root).attest(pid) == []
    assert engine.paths() == []


async def test_container_not_yet_known_is_retried(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    engine.unknown_for = 2
    pid, root = process_in_cgroup(IN_CONTAINER)
    assert sorted(await attestor(engine, root).attest(pid)) == EXPECTED
    assert engine.paths().count(f"/containers/{CID}/json") == 3


async def test_unknown_container_is_refused_after_retries(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    pid, root = process_in_cgroup(f"0::/docker/{OTHER}\n")
    with pytest.raises(AttestationFailed, match=f"status 404: .*No such container: {OTHER}"):
        await attestor(engine, root).attest(pid)
    assert engine.paths().count(f"/containers/{OTHER}/json") == 4


async def test_image_the_daemon_cannot_inspect_leaves_out_only_its_digest(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    engine.images.clear()
    pid, root = process_in_cgroup(IN_CONTAINER)
    got = await attestor(engine, root).attest(pid)
    assert sorted(got) == [s for s in EXPECTED if not s.value.startswith("image_config_digest")]


async def test_image_name_cannot_steer_the_image_request(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    # The container's creator chooses Config.Image: "/" is sent encoded, ".." not at all.
    hostile = f"../../containers/{CID}"
    engine.containers[CID]["Config"]["Image"] = hostile
    pid, root = process_in_cgroup(IN_CONTAINER)
    got = await attestor(engine, root).attest(pid)
    assert not any(s.value.startswith("image_config_digest") for s in got)
    assert engine.paths() == [f"/containers/{CID}/json"]
    engine.containers[CID]["Config"]["Image"] = IMAGE
    await attestor(engine, root).attest(pid)
    assert engine.raw_paths()[-1] == f"/images/{IMAGE.replace('/', '%2F')}/json"


async def test_overlong_value_is_left_out(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    engine.containers[CID]["Config"]["Env"].append("BLOB=" + "x" * 2000)
    pid, root = process_in_cgroup(IN_CONTAINER)
    assert sorted(await attestor(engine, root).attest(pid)) == EXPECTED


async def test_two_containers_in_the_cgroup_file_are_refused(
    engine: FakeDockerEngine, process_in_cgroup: CgroupProcess
) -> None:
    # Security: a process whose cgroups name two containers gets neither's selectors.
    engine.containers[OTHER] = docker_inspect(OTHER, "evil", {"com.acme.app": "db"}, [])
    pid, root = process_in_cgroup(f"1:cpu:/docker/{CID}\n2:memory:/docker/{OTHER}\n")
    with pytest.raises(AttestationFailed, match="multiple container IDs found"):
        await attestor(engine, root).attest(pid)
    assert engine.paths() == []


async def test_vanished_process_is_refused(engine: FakeDockerEngine, tmp_path: Path) -> None:
    with pytest.raises(AttestationFailed, match="docker: process 4242 is gone"):
        await attestor(engine, tmp_path).attest(4242)


async def test_daemon_not_running(tmp_path: Path, process_in_cgroup: CgroupProcess) -> None:
    pid, root = process_in_cgroup(IN_CONTAINER)
    config = DockerConfig(f"unix://{tmp_path}/absent.sock")
    plugin = DockerWorkloadAttestor(config, proc_root=root, retry_backoffs=())
    with pytest.raises(AttestationFailed, match=r"absent\.sock.*No such file or directory"):
        await plugin.attest(pid)


async def test_daemon_answering_garbage(tmp_path: Path, process_in_cgroup: CgroupProcess) -> None:
    path = tmp_path / "garbage.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        pid, root = process_in_cgroup(IN_CONTAINER)
        plugin = DockerWorkloadAttestor(
            DockerConfig(f"unix://{path}"), proc_root=root, retry_backoffs=()
        )
        task = asyncio.create_task(plugin.attest(pid))
        conn, _ = await asyncio.to_thread(listener.accept)
        with conn:
            conn.recv(4096)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        with pytest.raises(AttestationFailed, match="docker: GET unix://"):
            await task


def parse(data: dict[str, object]) -> DockerConfig:
    return DockerConfig.from_settings(Block(data, "plugins.WorkloadAttestor.docker.plugin_data"))


def test_config_defaults_and_keys() -> None:
    assert parse({}) == DockerConfig("unix:///var/run/docker.sock", None)
    assert parse({"docker_socket_path": "unix:///run/d.sock", "docker_version": "1.41"}) == (
        DockerConfig("unix:///run/d.sock", "1.41")
    )
    assert parse({"use_new_container_locator": True, "verbose_container_locator_logs": True})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"docker_socket_path": "tcp://127.0.0.1:2375"}, "must be a unix:// socket"),
        ({"docker_socket_path": "/var/run/docker.sock"}, "must be a unix:// socket"),
        ({"docker_version": "v1.41"}, "must look like 1.41"),
        ({"use_new_container_locator": False}, "only the current container locator"),
        ({"podman_socket_path": "unix:///run/podman.sock"}, "unknown key"),
        ({"container_id_cgroup_matchers": ["/docker/<id>"]}, "unknown key"),
    ],
)
def test_config_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(data)
