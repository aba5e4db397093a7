"""``plastron-server``: dispatch on the verb path (``entry create``, ``bundle show``, ``run`` ...).

Every failure ends here as one ``Error: ...`` line on stderr and exit status 1; no traceback
reaches the user (a bug prints its exception type, never key material, which is never in
messages anyway).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from plastron.errors import PlastronError
from plastron.server.cli import (
    agent,
    agent_purge,
    authority,
    bundle,
    debug,
    entry,
    federation,
    healthcheck,
    join_token,
    logger,
    mint,
)
from plastron.server.cli.args import CliError
from plastron.version import VERSION_FLAGS, package_version

Command = Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    try:
        from plastron.server.main import run_command  # noqa: PLC0415 - heavy, only for "run"
    except ImportError as exc:
        raise CliError(f"run: the server runtime is not available ({exc})") from None
    return int(run_command(argv))


def _validate(argv: list[str]) -> int:
    try:
        from plastron.server.main import validate_command  # noqa: PLC0415
    except ImportError as exc:
        raise CliError(f"validate: the server runtime is not available ({exc})") from None
    return int(validate_command(argv))


COMMANDS: dict[tuple[str, ...], Command] = {
    ("run",): _run,
    ("validate",): _validate,
    **healthcheck.COMMANDS,
    **join_token.COMMANDS,
    **entry.COMMANDS,
    **bundle.COMMANDS,
    **debug.COMMANDS,
    **logger.COMMANDS,
    **agent.COMMANDS,
    **agent_purge.COMMANDS,
    **mint.COMMANDS,
    **authority.COMMANDS,
    **federation.COMMANDS,
}


def usage() -> str:
    verbs = "\n".join(f"    {' '.join(path)}" for path in sorted(COMMANDS))
    return f"Usage: plastron-server <command> [flags]\n\nAvailable commands:\n{verbs}\n"


def resolve(argv: list[str]) -> tuple[Command, list[str]]:
    """The command for the longest verb path that prefixes ``argv``, and its own flags."""
    for length in (3, 2, 1):
        path = tuple(argv[:length])
        if len(path) == length and path in COMMANDS:
            return COMMANDS[path], argv[length:]
    if not argv:
        raise CliError("no command given (run 'plastron-server -h' for the list)")
    group = [" ".join(p) for p in sorted(COMMANDS) if p[0] == argv[0]]
    if group:
        raise CliError(
            f"unknown command {' '.join(argv[:2])!r}; did you mean one of: {', '.join(group)}"
        )
    raise CliError(f"unknown command {argv[0]!r} (run 'plastron-server -h' for the list)")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if args and args[0] in VERSION_FLAGS:
        print(package_version())
        return 0
    try:
        command, rest = resolve(args)
        return command(rest)
    except (CliError, PlastronError) as exc:
        print(f"Error: {' '.join(str(exc).split())}", file=sys.stderr)
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
    except SystemExit:
        raise  # -h of a verb exits 0 after printing its help
    except Exception as exc:  # one line, never a traceback
        print(
            f"Error: internal error: {type(exc).__name__}: {' '.join(str(exc).split())}",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
