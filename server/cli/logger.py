"""``plastron-server logger get|set|reset``: the Logger API, printed as SPIRE prints it."""

from __future__ import annotations

from collections.abc import Callable

from plastron.proto.spire.api.server.logger.v1 import logger_pb2
from plastron.proto.spire.api.types import logger_pb2 as types_logger_pb2
from plastron.server.cli.admin_client import call_one
from plastron.server.cli.args import CliError, flag, new_parser, output_flag, socket_flag
from plastron.server.cli.render import print_json

# logrus.ParseLevel's names ("warning" is its alias of "warn").
_LEVEL_NAMES = {
    "panic": "PANIC",
    "fatal": "FATAL",
    "error": "ERROR",
    "warn": "WARN",
    "warning": "WARN",
    "info": "INFO",
    "debug": "DEBUG",
    "trace": "TRACE",
}


def _level_text(level: int) -> str:
    try:
        return types_logger_pb2.LogLevel.Name(level).lower()
    except ValueError:
        return f"unknown level {level}"


def print_logger(resp: types_logger_pb2.Logger, output: str) -> None:
    if output == "json":
        print_json(resp)
        return
    print(f"Logger Level : {_level_text(resp.current_level)}")
    print(f"Launch Level : {_level_text(resp.launch_level)}")
    print()


def get(argv: list[str]) -> int:
    parser = new_parser("logger get", "Gets the logger details")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    resp = call_one(
        ns.socketPath,
        lambda c: c.logger.GetLogger,
        logger_pb2.GetLoggerRequest(),
        context="error fetching logger",
    )
    print_logger(resp, ns.output)
    return 0


def set_level(argv: list[str]) -> int:
    parser = new_parser("logger set", "Sets the logger details")
    socket_flag(parser)
    output_flag(parser)
    flag(
        parser,
        "level",
        default="",
        help="The new log level, one of (panic, fatal, error, warn, info, debug, trace)",
    )
    ns = parser.parse_args(argv)
    if not ns.level:
        raise CliError("a value (-level) must be set")
    name = _LEVEL_NAMES.get(ns.level.lower())
    if name is None:
        raise CliError(f"the value {ns.level!r} is not a valid setting")
    resp = call_one(
        ns.socketPath,
        lambda c: c.logger.SetLogLevel,
        logger_pb2.SetLogLevelRequest(new_level=name),
        context="failed to set log level",
    )
    print_logger(resp, ns.output)
    return 0


def reset(argv: list[str]) -> int:
    parser = new_parser("logger reset", "Reset the logger details to launch level")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    resp = call_one(
        ns.socketPath,
        lambda c: c.logger.ResetLogLevel,
        logger_pb2.ResetLogLevelRequest(),
        context="failed to reset logger",
    )
    print_logger(resp, ns.output)
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("logger", "get"): get,
    ("logger", "set"): set_level,
    ("logger", "reset"): reset,
}
