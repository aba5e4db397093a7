"""``plastron-server healthcheck``: gRPC health Check on the admin socket."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from plastron.proto.grpc.health.v1 import health_pb2
from plastron.server.cli.admin_client import AdminClient, run_with_client
from plastron.server.cli.args import CliError, bool_flag, new_parser, socket_flag

_SERVING = health_pb2.HealthCheckResponse.SERVING


def healthcheck(argv: list[str]) -> int:
    parser = new_parser("healthcheck", "Determines server health status")
    bool_flag(parser, "shallow", "perform a less stringent health check")
    bool_flag(parser, "verbose", "print verbose information")
    socket_flag(parser)
    ns = parser.parse_args(argv)
    if ns.verbose:
        print("Checking server health...")

    async def body(client: AdminClient) -> Any:
        return await client.call(client.health.Check, health_pb2.HealthCheckRequest())

    try:
        resp = run_with_client(ns.socketPath, body, timeout=10.0)
    except CliError as exc:
        reason = (
            f"unable to determine health ({exc})" if ns.verbose else "unable to determine health"
        )
        print(f"Server is unhealthy: {reason}", file=sys.stderr)
        return 1
    if resp.status != _SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        print(f'Server is unhealthy: server returned status "{status}"', file=sys.stderr)
        return 1
    print("Server is healthy.")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {("healthcheck",): healthcheck}
