"""Argument parsing shaped like SPIRE's Go flags: ``-spiffeID X`` (``--spiffeID`` works too)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from plastron.errors import InvalidArgument

DEFAULT_SERVER_SOCKET = "/tmp/plastron-server/private/api.sock"


class CliError(Exception):
    """A user-facing CLI failure: printed as one line on stderr, exit code 1."""


class FlagParser(argparse.ArgumentParser):
    """argparse that reports errors as CliError (one line, exit 1) instead of exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


def flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Add ``-name`` and ``--name`` as one flag (Go's flag package accepts both)."""
    kwargs.setdefault("dest", name)
    parser.add_argument(f"-{name}", f"--{name}", **kwargs)


def socket_flag(parser: argparse.ArgumentParser, default: str = DEFAULT_SERVER_SOCKET) -> None:
    flag(parser, "socketPath", default=default, help=f"admin API socket (default {default})")


def output_flag(parser: argparse.ArgumentParser) -> None:
    flag(parser, "output", choices=("pretty", "json"), default="pretty", help="output format")


def parse_duration_seconds(text: str, name: str) -> int:
    """Go-style durations ("1h", "90s", "10m") or plain seconds, for -ttl style flags."""
    units = {"h": 3600, "m": 60, "s": 1}
    try:
        return int(text)
    except ValueError:
        pass
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        elif ch in units and number:
            total += int(number) * units[ch]
            number = ""
        else:
            raise InvalidArgument(f"-{name}: invalid duration {text!r}")
    if number:
        raise InvalidArgument(f"-{name}: invalid duration {text!r} (missing unit)")
    return total


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(1)
