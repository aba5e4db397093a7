"""``plastron-server agent purge -expiredFor D [-dryRun]``: SPIRE's purge of stale agents.

An agent that attested with a method that lets it attest again (``can_reattest``: x509pop,
tpm_devid, cloud identity documents...) leaves its record behind when the machine is gone; its
SVID simply stops being renewed. ``agent purge`` deletes the records whose X509-SVID expired
longer ago than ``-expiredFor`` (default 24h). Agents that cannot re-attest (join tokens) are
never purged: deleting them would not let them back in, and the record is their only trace.

One difference from SPIRE, on purpose: banned agents are kept. Deleting a banned record lifts
the ban, and an agent that can re-attest would then be let back in by the same credential the
operator banned; a ban is lifted only by ``agent evict``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import wrappers_pb2

from plastron.proto.spire.api.server.agent.v1 import agent_pb2 as agentv1
from plastron.proto.spire.api.types import agent_pb2
from plastron.server.cli.admin_client import AdminClient, run_with_client
from plastron.server.cli.args import (
    CliError,
    bool_flag,
    flag,
    new_parser,
    output_flag,
    parse_duration_seconds,
    socket_flag,
)
from plastron.server.cli.render import id_string, plural, print_json_value

LIST_PAGE_SIZE = 1000
DEFAULT_EXPIRED_FOR = "24h"  # SPIRE's default


@dataclass
class ExpiredAgent:
    agent_id: str
    deleted: bool = False
    error: str = ""

    def as_json(self) -> dict[str, object]:
        """SPIRE's shape: ``error`` only when there is one (Go's ``omitempty``)."""
        doc: dict[str, object] = {"agent_id": self.agent_id, "deleted": self.deleted}
        if self.error:
            doc["error"] = self.error
        return doc


async def _reattestable_agents(client: AdminClient) -> list[agent_pb2.Agent]:
    """Every agent that can re-attest and is not banned, with its SVID's expiry."""
    flt = agentv1.ListAgentsRequest.Filter(
        by_can_reattest=wrappers_pb2.BoolValue(value=True),
        by_banned=wrappers_pb2.BoolValue(value=False),
    )
    mask = agent_pb2.AgentMask(x509svid_expires_at=True)
    agents: list[agent_pb2.Agent] = []
    token = ""
    while True:
        req = agentv1.ListAgentsRequest(
            filter=flt, output_mask=mask, page_size=LIST_PAGE_SIZE, page_token=token
        )
        page = await client.call(client.agent.ListAgents, req, context="failed to list agents")
        agents.extend(page.agents)
        token = page.next_page_token
        if not token:
            return agents


async def _purge(client: AdminClient, expired_for: int, dry_run: bool) -> list[ExpiredAgent]:
    cutoff = int(time.time()) - expired_for
    results = []
    for agent in await _reattestable_agents(client):
        # SPIRE's test: expired for strictly longer than -expiredFor.
        if agent.x509svid_expires_at >= cutoff:
            continue
        result = ExpiredAgent(id_string(agent.id))
        if not dry_run:
            try:
                await client.call(client.agent.DeleteAgent, agentv1.DeleteAgentRequest(id=agent.id))
                result.deleted = True
            except CliError as exc:
                result.error = str(exc)
        results.append(result)
    return results


def _print_pretty(results: list[ExpiredAgent], dry_run: bool) -> None:
    """SPIRE's layout, line for line."""
    if not results:
        print("No agents to purge.")
        return
    print(f"Found {len(results)} expired {plural(len(results), 'agent', 'agents')}\n")
    if dry_run:
        print("\nAgents that can be purged:")
        for r in results:
            print(f"SPIFFE ID         : {r.agent_id}")
        return
    purged = [r for r in results if r.deleted]
    kept = [r for r in results if not r.deleted]
    if purged:
        print("Agents purged:")
        for r in purged:
            print(f"SPIFFE ID         : {r.agent_id}")
    if kept:
        print("Agents not purged:")
        for r in kept:
            print(f"SPIFFE ID         : {r.agent_id}")
            print(f"Error             : {r.error}")


def purge(argv: list[str]) -> int:
    parser = new_parser(
        "agent purge", "Delete expired agents that attested using a non-TOFU security model"
    )
    flag(
        parser,
        "expiredFor",
        default=DEFAULT_EXPIRED_FOR,
        help="how long ago the agent's SVID must have expired (Go duration, default 24h)",
    )
    bool_flag(parser, "dryRun", "only list the agents that would be purged")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    expired_for = parse_duration_seconds(ns.expiredFor, "expiredFor")

    results = run_with_client(ns.socketPath, lambda c: _purge(c, expired_for, ns.dryRun))
    if ns.output == "json":
        print_json_value({"expired_agents": [r.as_json() for r in results]})
    else:
        _print_pretty(results, ns.dryRun)
    failed = [r for r in results if not ns.dryRun and not r.deleted]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise CliError(f"failed to purge agent {failed[0].agent_id}: {failed[0].error}{more}")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("agent", "purge"): purge,
}
