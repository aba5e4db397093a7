"""``plastron-server token generate``: a one-time join token for agent attestation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plastron.proto.spire.api.server.agent.v1 import agent_pb2 as agentv1
from plastron.server.cli.admin_client import AdminClient, run_with_client
from plastron.server.cli.args import (
    CliError,
    flag,
    int32_value,
    new_parser,
    output_flag,
    socket_flag,
)
from plastron.server.cli.entry_input import spiffe_id_proto
from plastron.server.cli.render import print_json


def generate(argv: list[str]) -> int:
    parser = new_parser("token generate", "Generates a join token")
    flag(parser, "spiffeID", default="", help="additional SPIFFE ID for the token owner")
    flag(parser, "ttl", type=int, default=600, help="token TTL in seconds (default 600)")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    if ns.ttl <= 0:
        raise CliError(f"-ttl: {ns.ttl} is not a positive number of seconds")
    req = agentv1.CreateJoinTokenRequest(ttl=int32_value(ns.ttl, "ttl", minimum=1))
    if ns.spiffeID:
        req.agent_id.CopyFrom(spiffe_id_proto(ns.spiffeID, "spiffeID"))

    async def body(client: AdminClient) -> Any:
        return await client.call(client.agent.CreateJoinToken, req)

    token = run_with_client(ns.socketPath, body)
    if ns.output == "json":
        print_json(token)
        return 0
    print(f"Token: {token.value}")
    if not ns.spiffeID:
        print("Warning: Missing SPIFFE ID.")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {("token", "generate"): generate}
