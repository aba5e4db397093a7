"""``plastron-dev up [-dir D] [-trustDomain T] [-attestor tpm|join_token]`` and
``plastron-dev down [-dir D]``: a Plastron environment for a user's CI.

``up`` prints shell-evaluable ``export`` lines on stdout (``eval "$(plastron-dev up)"``) and
leaves the processes running; notes go to stderr. Any failure is one stderr line and exit 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from plastron.devkit import swtpm
from plastron.devkit.environment import default_dir, down, up
from plastron.devkit.processes import DevKitError
from plastron.errors import ConfigError, InvalidSpiffeId
from plastron.spiffe.ids import TrustDomain


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(1, f"plastron-dev: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="plastron-dev", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_p = sub.add_parser("up", help="start a server and an agent; print export lines")
    up_p.add_argument("-dir", default=None, help=f"state directory (default {default_dir()})")
    up_p.add_argument("-trustDomain", default="example.org", help="trust domain")
    up_p.add_argument(
        "-attestor",
        choices=("tpm", "join_token"),
        default=None,
        help="node attestation (default tpm when swtpm is installed, else join_token)",
    )
    down_p = sub.add_parser("down", help="stop what up started")
    down_p.add_argument("-dir", default=None, help=f"state directory (default {default_dir()})")
    return parser


def _choose_attestor(requested: str | None) -> str:
    missing = swtpm.missing_packages()
    if requested == "tpm" and missing:
        raise DevKitError(f"-attestor tpm needs swtpm: install {', '.join(missing)}")
    if requested is None and missing:
        print(
            f"plastron-dev: swtpm not installed ({', '.join(missing)}): "
            "the agent attests with a join token",
            file=sys.stderr,
        )
        return "join_token"
    return requested or "tpm"


def _up(ns: argparse.Namespace) -> int:
    try:
        trust_domain = str(TrustDomain.parse(ns.trustDomain))
    except InvalidSpiffeId as exc:
        raise DevKitError(f"-trustDomain {ns.trustDomain!r}: {exc}") from exc
    directory = Path(ns.dir).absolute() if ns.dir else default_dir()
    env = up(directory, trust_domain, _choose_attestor(ns.attestor))
    sys.stdout.write(env.export_lines())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "up":
            return _up(ns)
        directory = Path(ns.dir).absolute() if ns.dir else default_dir()
        stopped = down(directory)
        summary = ", ".join(stopped) or "nothing (not running)"
        print(f"plastron-dev: stopped {summary}", file=sys.stderr)
        return 0
    except (DevKitError, ConfigError, OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"plastron-dev: {exc}", file=sys.stderr)
        return 1
