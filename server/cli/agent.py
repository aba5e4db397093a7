"""``plastron-server agent list|show|count|ban|evict`` (SPIRE's flags and output)."""

from __future__ import annotations

import argparse
import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import empty_pb2, wrappers_pb2

from plastron.proto.spire.api.server.agent.v1 import agent_pb2 as agentv1
from plastron.proto.spire.api.types import agent_pb2, selector_pb2
from plastron.server.cli.admin_client import AdminClient, call_one, run_with_client
from plastron.server.cli.args import (
    CliError,
    FlagParser,
    flag,
    new_parser,
    output_flag,
    repeated_flag,
    socket_flag,
)
from plastron.server.cli.entry_input import selector_protos, spiffe_id_proto
from plastron.server.cli.render import (
    agent_lines,
    agent_selector_lines,
    plural,
    print_count,
    print_json,
)

LIST_PAGE_SIZE = 1000
_MATCH = {
    "exact": selector_pb2.SelectorMatch.MATCH_EXACT,
    "subset": selector_pb2.SelectorMatch.MATCH_SUBSET,
    "superset": selector_pb2.SelectorMatch.MATCH_SUPERSET,
    "any": selector_pb2.SelectorMatch.MATCH_ANY,
}
# SPIRE's wire format for by_expires_before (Go layout "2006-01-02 15:04:05 -0700 -07").
_SPIRE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}) [+-]\d{2}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def expires_before(text: str) -> str:
    """Accept SPIRE's layout or a plain ``YYYY-MM-DD`` (midnight UTC); send SPIRE's layout."""
    m = _SPIRE_TIME.match(text)
    try:
        if m:
            when = _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S %z")
        elif _DATE_ONLY.match(text):
            when = _dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=_dt.UTC)
        else:
            raise ValueError("unrecognised layout")
    except ValueError:
        raise CliError(
            f'-expiresBefore: date is not valid: {text!r} (use "YYYY-MM-DD" or '
            '"2006-01-02 15:04:05 -0700 -07")'
        ) from None
    offset = when.strftime("%z")
    return f"{when.strftime('%Y-%m-%d %H:%M:%S')} {offset} {offset[:3]}"


def _tristate(text: str) -> wrappers_pb2.BoolValue | None:
    """SPIRE's -banned / -canReattest: 'true', 'false', anything else means no filter."""
    if text == "true":
        return wrappers_pb2.BoolValue(value=True)
    if text == "false":
        return wrappers_pb2.BoolValue(value=False)
    return None


def _filter_parser(prog: str, description: str) -> FlagParser:
    parser = new_parser(prog, description)
    repeated_flag(parser, "selector", "filter by node selector; repeatable")
    flag(parser, "matchSelectorsOn", choices=tuple(_MATCH), default="superset")
    flag(parser, "attestationType", default="", help="filter by attestation type")
    flag(parser, "banned", default="", help="'true' or 'false'; anything else: all")
    flag(parser, "canReattest", default="", help="'true' or 'false'; anything else: all")
    flag(parser, "expiresBefore", default="", help='"YYYY-MM-DD" or SPIRE\'s time layout')
    socket_flag(parser)
    output_flag(parser)
    return parser


def _filter_fields(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ns.selector:
        out["by_selector_match"] = selector_pb2.SelectorMatch(
            selectors=selector_protos(ns.selector), match=_MATCH[ns.matchSelectorsOn]
        )
    if ns.attestationType:
        out["by_attestation_type"] = ns.attestationType
    for name, field in (("banned", "by_banned"), ("canReattest", "by_can_reattest")):
        value = _tristate(getattr(ns, name))
        if value is not None:
            out[field] = value
    if ns.expiresBefore:
        out["by_expires_before"] = expires_before(ns.expiresBefore)
    return out


def list_agents(argv: list[str]) -> int:
    ns = _filter_parser("agent list", "Lists attested agents").parse_args(argv)
    flt = agentv1.ListAgentsRequest.Filter(**_filter_fields(ns))

    async def body(client: AdminClient) -> list[agent_pb2.Agent]:
        agents: list[agent_pb2.Agent] = []
        token = ""
        while True:
            req = agentv1.ListAgentsRequest(filter=flt, page_size=LIST_PAGE_SIZE, page_token=token)
            page = await client.call(client.agent.ListAgents, req)
            agents.extend(page.agents)
            token = page.next_page_token
            if not token:
                return agents

    agents = run_with_client(ns.socketPath, body)
    if ns.output == "json":
        print_json(agentv1.ListAgentsResponse(agents=agents))
        return 0
    if not agents:
        print("No attested agents found")
        return 0
    print(f"Found {len(agents)} attested {plural(len(agents), 'agent', 'agents')}:\n")
    for agent in agents:
        print("\n".join(agent_lines(agent)) + "\n")
    return 0


def count(argv: list[str]) -> int:
    ns = _filter_parser("agent count", "Count attested agents").parse_args(argv)
    req = agentv1.CountAgentsRequest(filter=agentv1.CountAgentsRequest.Filter(**_filter_fields(ns)))

    resp = call_one(ns.socketPath, lambda c: c.agent.CountAgents, req)
    print_count(resp, ns.output, "attested agent", "attested agents")
    return 0


def _id_command(argv: list[str], verb: str, description: str) -> tuple[argparse.Namespace, Any]:
    parser = new_parser(f"agent {verb}", description)
    flag(parser, "spiffeID", default="", help="the agent's SPIFFE ID")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    if not ns.spiffeID:
        raise CliError("a SPIFFE ID is required")
    return ns, spiffe_id_proto(ns.spiffeID, "spiffeID")


def show(argv: list[str]) -> int:
    ns, sid = _id_command(argv, "show", "Shows the details of an attested agent")

    async def body(client: AdminClient) -> Any:
        return await client.call(client.agent.GetAgent, agentv1.GetAgentRequest(id=sid))

    agent = run_with_client(ns.socketPath, body)
    if ns.output == "json":
        print_json(agent)
        return 0
    print("Found an attested agent given its SPIFFE ID\n")
    print("\n".join(agent_lines(agent)) + "\n")
    for line in agent_selector_lines(agent):
        print(line)
    return 0


def ban(argv: list[str]) -> int:
    ns, sid = _id_command(argv, "ban", "Ban an attested agent")

    resp = call_one(ns.socketPath, lambda c: c.agent.BanAgent, agentv1.BanAgentRequest(id=sid))
    _done(ns, resp, "Agent banned successfully")
    return 0


def evict(argv: list[str]) -> int:
    ns, sid = _id_command(argv, "evict", "Evicts an attested agent")

    resp = call_one(
        ns.socketPath, lambda c: c.agent.DeleteAgent, agentv1.DeleteAgentRequest(id=sid)
    )
    _done(ns, resp, "Agent evicted successfully")
    return 0


def _done(ns: argparse.Namespace, resp: Any, message: str) -> None:
    if ns.output == "json":
        print_json(resp if resp is not None else empty_pb2.Empty())
    else:
        print(message)


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("agent", "list"): list_agents,
    ("agent", "count"): count,
    ("agent", "show"): show,
    ("agent", "ban"): ban,
    ("agent", "evict"): evict,
}
