"""Shared types for the in-process Workload API tests (uniquely named: imported by tests)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "agent"))

from agent_authority import TestAuthority

from plastron.agent.cache import WorkloadCache, WorkloadEntry
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
