"""``plastron-agent run``: the agent process (filled in once the server API has landed)."""

from __future__ import annotations

from plastron.config import AgentConfig
from plastron.errors import FailedPrecondition


async def run_agent(config: AgentConfig, *, join_token: str | None = None) -> int:
    raise FailedPrecondition("plastron-agent run is not available yet")
