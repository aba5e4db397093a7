"""``plastron-agent``: run, validate, healthcheck, api fetch x509|jwt, api validate jwt, api watch,
x509pop keygen.

Flags are SPIRE's (single dash, camelCase): ``-socketPath``, ``-config``, ``-audience``...
Exit codes: 0 success, 1 failure (the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TextIO

from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from plastron.agent.cli import agent_commands, api, node_credentials
from plastron.agent.cli.workload_client import socket_path_from
from plastron.configs.duration import parse_go_duration
from plastron.configs.overrides import AGENT_RUN_FLAGS, add_override_flags
from plastron.errors import ConfigError, PlastronError
from plastron.version import VERSION_FLAGS, package_version

DEFAULT_CONFIG = "conf/agent/agent.conf"
Command = Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]


def _socket_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-socketPath", default=None, help="Workload API socket path")
    p.add_argument(
        "-timeout", type=_timeout_seconds, default=5.0, help="time to wait for a response (5s)"
    )


def _timeout_seconds(text: str) -> float:
    """SPIRE's -timeout is a Go duration (``5s``, ``1500ms``); a bare number has no unit."""
    try:
        value = parse_go_duration(text, "-timeout")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("-timeout: ")) from None
    if not value:
        raise argparse.ArgumentTypeError("must be longer than zero")
    return value.total_seconds()


def _output_flags(p: argparse.ArgumentParser, *spellings: str) -> None:
    """SPIRE's -output (``fetch jwt`` also takes its deprecated -format) and -silent."""
    names = ("-output", *spellings)
    p.add_argument(*names, dest="output", choices=("pretty", "json"), default="pretty")
    p.add_argument("-silent", action="store_true", help="suppress the pretty output on stdout")


def _api_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api_p = sub.add_parser("api", help="call the Workload API")
    api_sub = api_p.add_subparsers(dest="api_command", required=True)
    fetch = api_sub.add_parser("fetch", help="fetch SVIDs")
    fetch_sub = fetch.add_subparsers(dest="fetch_kind", required=True)
    x509_p = fetch_sub.add_parser("x509", help="fetch X509-SVIDs")
    _socket_flags(x509_p)
    _output_flags(x509_p)
    x509_p.add_argument("-write", default="", help="directory to write the SVIDs and bundles to")
    x509_p.set_defaults(run=api.fetch_x509)
    jwt_p = fetch_sub.add_parser("jwt", help="fetch JWT-SVIDs")
    _socket_flags(jwt_p)
    _output_flags(jwt_p, "-format")
    jwt_p.add_argument("-audience", action="append", required=True, help="audience (repeatable)")
    jwt_p.add_argument("-spiffeID", default="", help="SPIFFE ID of the JWT-SVID to fetch")
    jwt_p.set_defaults(run=api.fetch_jwt)
    validate = api_sub.add_parser("validate", help="validate SVIDs")
    validate_sub = validate.add_subparsers(dest="validate_kind", required=True)
    vjwt = validate_sub.add_parser("jwt", help="validate a JWT-SVID")
    _socket_flags(vjwt)
    _output_flags(vjwt)
    vjwt.add_argument("-audience", required=True)
    vjwt.add_argument("-svid", required=True)
    vjwt.set_defaults(run=api.validate_jwt)
    watch = api_sub.add_parser("watch", help="print X509-SVID updates as they arrive")
    _socket_flags(watch)
    _output_flags(watch)
    watch.set_defaults(run=api.watch)


def _agent_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-config", default=DEFAULT_CONFIG)
    run.add_argument("-joinToken", default=None)
    run.add_argument("-expandEnv", action="store_true")
    add_override_flags(run, AGENT_RUN_FLAGS)
    run.set_defaults(run=agent_commands.run)
    val = sub.add_parser("validate", help="validate an agent configuration file")
    val.add_argument("-config", default=DEFAULT_CONFIG)
    val.add_argument("-expandEnv", action="store_true")
    add_override_flags(val, AGENT_RUN_FLAGS)
    val.set_defaults(run=agent_commands.validate)
    health = sub.add_parser("healthcheck", help="check the agent's health over its socket")
    _socket_flags(health)
    health.add_argument("-shallow", action="store_true")
    health.add_argument("-verbose", action="store_true")
    health.set_defaults(run=api.healthcheck)


def with_fetch_alias(argv: list[str]) -> list[str]:
    """``api fetch`` without a kind is ``api fetch x509``, as in SPIRE."""
    if argv[:2] == ["api", "fetch"] and (len(argv) == 2 or argv[2] not in ("x509", "jwt")):
        return ["api", "fetch", "x509", *argv[2:]]
    return argv


def connection_error(args: argparse.Namespace, exc: BaseException) -> str:
    """One line naming the socket the command could not use."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    socket = getattr(args, "socketPath", None)
    if socket is None and hasattr(args, "socketPath"):
        try:
            socket = socket_path_from(None)
        except PlastronError:
            socket = None
    where = f" (is the agent running? socket {socket})" if socket else ""
    return f"connection error: {reason}{where}"


def grpc_code_name(exc: GRPCError) -> str:
    """Go's spelling of a status code (PERMISSION_DENIED -> PermissionDenied), as SPIRE prints."""
    return "".join(word.capitalize() for word in exc.status.name.split("_"))


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = OneLineErrorParser(prog="plastron-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    _agent_parsers(sub)
    _api_parser(sub)
    node_credentials.add_parsers(sub)
    return parser


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags: one line on stderr and exit code 1, like every other CLI failure."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"Error: {self.prog}: {message}\n")
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in VERSION_FLAGS:
        stream.write(f"{package_version()}\n")
        return 0
    args = build_parser().parse_args(with_fetch_alias(argv))
    command: Command = args.run
    try:
        return asyncio.run(command(args, stream))
    except GRPCError as exc:
        message = " ".join((exc.message or "").split())
        sys.stderr.write(f"Error: rpc error: code = {grpc_code_name(exc)} desc = {message}\n")
    except PlastronError as exc:
        sys.stderr.write(f"Error: {exc}\n")
    except (OSError, ConnectionError, StreamTerminatedError, ProtocolError) as exc:
        sys.stderr.write(f"Error: {connection_error(args, exc)}\n")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback to the user; the log has the details
        logging.getLogger("plastron.agent").debug("unexpected failure", exc_info=exc)
        sys.stderr.write(f"Error: unexpected failure: {type(exc).__name__}: {exc}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
