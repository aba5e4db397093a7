"""Argument parsing shaped like SPIRE's Go flags: ``-spiffeID X`` (``--spiffeID`` works too)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any, NoReturn

from plastron.configs.duration import parse_go_duration
from plastron.errors import ConfigError

DEFAULT_SERVER_SOCKET = "/tmp/plastron-server/private/api.sock"  # noqa: S108 - SPIRE-shaped default


class CliError(Exception):
    """A user-facing CLI failure: printed as one line on stderr, exit code 1."""


class FlagParser(argparse.ArgumentParser):
    """argparse that reports errors as CliError (one line, exit 1) instead of exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # Go's flag package matches names exactly; argparse would still expand single-dash
        # prefixes ("-spiffe" -> "-spiffeID") even with allow_abbrev=False.
        return []


def flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``-name`` and ``--name`` as one flag (Go's flag package accepts both)."""
    kwargs.setdefault("dest", name)
    parser.add_argument(f"-{name}", f"--{name}", **kwargs)


def socket_flag(parser: argparse.ArgumentParser, default: str = DEFAULT_SERVER_SOCKET) -> None:
    flag(parser, "socketPath", default=default, help=f"admin API socket (default {default})")


def output_flag(parser: argparse.ArgumentParser) -> None:
    flag(parser, "output", choices=("pretty", "json"), default="pretty", help="output format")


def parse_duration_seconds(text: str, name: str) -> int:
    """A Go-duration flag (``-ttl 1.5h``, ``90s``, ``500ms``) as whole seconds, rounded up: the
    API carries whole seconds and 0 means "the server's default", so a sub-second TTL becomes
    one second rather than the default. A bare number (``-ttl 90``) has no unit and is refused,
    as Go's flag package refuses it for SPIRE's duration flags."""
    try:
        value = parse_go_duration(text, f"-{name}")
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    micros = value // dt.timedelta(microseconds=1)
    return -(-micros // 1_000_000)


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(1)


# ---- additions for the verb modules ------------------------------------------------------------

# Inputs read from files or stdin are bounded so a wrong path (a device, a huge log) cannot
# exhaust memory; 4 MiB is far above any realistic entry batch or bundle.
MAX_INPUT_BYTES = 4 * 1024 * 1024
_INT32_MAX = (1 << 31) - 1


def new_parser(prog: str, description: str = "") -> FlagParser:
    # Go's flag package has no abbreviations: "-spiffe" must not mean "-spiffeID".
    return FlagParser(prog=f"plastron-server {prog}", description=description, allow_abbrev=False)


def repeated_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """A string flag that may be given several times (Go's StringsFlag)."""
    flag(parser, name, action="append", default=[], help=help)


def bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    flag(parser, name, action="store_true", help=help)


def int32_value(value: int, name: str, *, minimum: int = 0) -> int:
    """Check an integer flag fits the proto int32 field it travels in."""
    if value < minimum or value > _INT32_MAX:
        raise CliError(f"-{name}: {value} is out of range ({minimum}..{_INT32_MAX})")
    return value


def duration_flag_seconds(text: str, name: str) -> int:
    """A Go duration flag (``-ttl 1h``) as whole seconds that fit in an int32."""
    if not text:
        return 0
    return int32_value(parse_duration_seconds(text, name), name)


def read_input(path: str, what: str) -> bytes:
    """Read ``path`` (or stdin for ``-`` / empty), refusing more than MAX_INPUT_BYTES."""
    try:
        if path in ("", "-"):
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise CliError(f"unable to load {what}: {exc.strerror or exc} ({path})") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise CliError(f"{what} is larger than {MAX_INPUT_BYTES} bytes ({path or 'stdin'})")
    return data
