from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "agent"))

from agent_authority import TestAuthority

from plastron.agent.cache import WorkloadCache, WorkloadEntry
from plastron.agent.workloadapi.endpoint import AgentHealth, start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.agent.workloadattestor.unix import UnixWorkloadAttestor
from plastron.clock import SystemClock
from plastron.spiffe.jwtsvid import JwtSvid


class AuthorityJwtSource:
    """Mints JWT-SVIDs with the test authority's key, standing in for the server's NewJWTSVID."""

    def __init__(self, ca: TestAuthority) -> None:
        self.ca = ca
        self.calls = 0

    async def new_jwt_svid(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> JwtSvid:
        self.calls += 1
        return self.ca.jwt(entry.spiffe_id, audience, now=SystemClock().now())


@dataclass
class WorkloadApiEnv:
    socket_path: str
    cache: WorkloadCache
    ca: TestAuthority
    jwt_source: AuthorityJwtSource


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
    server = await start_endpoint(socket_path, [service, AgentHealth()])
    try:
        yield WorkloadApiEnv(socket_path, cache, ca, source)
    finally:
        server.close()
        await server.wait_closed()
