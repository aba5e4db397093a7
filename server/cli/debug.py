"""``plastron-server debug getinfo``: the Debug API's GetInfo, printed as SPIRE prints it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from plastron.proto.spire.api.server.debug.v1 import debug_pb2
from plastron.server.cli.admin_client import call_one
from plastron.server.cli.args import new_parser, output_flag, socket_flag
from plastron.server.cli.render import id_string, print_json


def go_seconds(total: int) -> str:
    """Go's ``time.Duration.String()`` for whole seconds: ``45s``, ``1m0s``, ``1h2m3s``."""
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _print_pretty(resp: debug_pb2.GetInfoResponse) -> None:
    print("Server Debug Info:")
    print(f"  Uptime:                  {go_seconds(resp.uptime)}")
    print(f"  Registered Agents:       {resp.agents_count}")
    print(f"  Registration Entries:    {resp.entries_count}")
    print(f"  Federated Bundles:       {resp.federated_bundles_count}")
    if not resp.svid_chain:
        return
    print("  SVID Chain:")
    for i, cert in enumerate(resp.svid_chain):
        expires = dt.datetime.fromtimestamp(cert.expires_at, dt.UTC)
        print(f"    [{i}] SPIFFE ID:  {id_string(cert.id) if cert.HasField('id') else '(none)'}")
        print(f"        Subject:    {cert.subject}")
        print(f"        Expires At: {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}")


def getinfo(argv: list[str]) -> int:
    parser = new_parser("debug getinfo", "Prints debug information about the server")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)

    resp = call_one(ns.socketPath, lambda c: c.debug.GetInfo, debug_pb2.GetInfoRequest())
    if ns.output == "json":
        print_json(resp)
    else:
        _print_pretty(resp)
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("debug", "getinfo"): getinfo,
}
