from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agent_workload_env import AuthorityJwtSource, TestAuthority, WorkloadApiEnv

from plastron.agent.cache import WorkloadCache
from plastron.agent.config import SdsConfig
from plastron.agent.sds.service import SecretDiscoveryService
from plastron.agent.workloadapi.endpoint import AgentHealth, start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.agent.workloadattestor.unix import UnixWorkloadAttestor
from plastron.clock import SystemClock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: keep them short.
    path = Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp"))
    path.chmod(0o755)  # other local users must reach the socket below it
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def workload_api(short_dir: Path) -> AsyncIterator[WorkloadApiEnv]:
    clock = SystemClock()
    ca = TestAuthority("example.org", clock.now() - dt.timedelta(seconds=10))
    cache = WorkloadCache(ca.td, clock)
    cache.set_bundle(ca.bundle)
    source = AuthorityJwtSource(ca)
    service = WorkloadAPIService(cache, [UnixWorkloadAttestor()], clock, jwt_source=source)
    socket_path = str(short_dir / "public" / "api.sock")
    sds = SecretDiscoveryService(cache, service.attestation, SdsConfig())
    server = await start_endpoint(socket_path, [service, sds, AgentHealth()], service.callers)
    try:
        yield WorkloadApiEnv(socket_path, cache, ca, source)
    finally:
        await server.close()
