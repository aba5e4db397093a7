"""A real agent with the docker and k8s workload attestors beside unix, against a fake Docker
Engine and a fake kubelet: a workload in no container is asked about by neither daemon and
still gets the SVID its unix selectors entitle it to."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll

from tests.container_fakes import FakeDockerEngine, FakeKubelet

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pac-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unix_selectors_still_served_beside_container_attestors(base: Path) -> None:
    engine = FakeDockerEngine(base / "docker.sock")
    kubelet = FakeKubelet()
    server = ServerProcess(base)
    server.start()
    agent = AgentProcess(
        base,
        server,
        plugins_extra=f"""
  WorkloadAttestor "docker" {{ plugin_data {{ docker_socket_path = "unix://{base}/docker.sock" }} }}
  WorkloadAttestor "k8s" {{ plugin_data {{ kubelet_read_only_port = {kubelet.port} }} }}
""",
    )
    try:
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        agent.start(server.join_token(NODE))

        def fetched() -> str | None:
            out = agent.cli("api", "fetch", "x509")
            return out.stdout if out.returncode == 0 and WORKLOAD in out.stdout else None

        poll("workload SVID with docker and k8s attestors configured", fetched)
        assert engine.paths() == []
        assert kubelet.paths() == []
        assert "workload attestor failed" not in agent.log_text()
    finally:
        agent.stop()
        server.stop()
        engine.close()
        kubelet.close()
