"""SPIRE's ``run`` override flags: ``-trustDomain``, ``-serverPort``, ``-dataDir`` … set the
config file's key of the same meaning, command line over file, as SPIRE merges them.

An override is applied to the parsed file before its keys are read, so a flag's value goes
through exactly the checks the key's would (``validate`` and ``run`` take the same flags), and
an error names the flag, not the key it stands for (``-serverPort must be between 1 and
65535``). A flag left unset leaves the file's value.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# key -> (value, flag name as the user typed it)
Overrides = Mapping[str, tuple[Any, str]]


@dataclass(frozen=True)
class OverrideFlag:
    flag: str
    key: str
    help: str
    kind: type = str  # str, int, or bool (a switch that sets the key to true)


# SPIRE's spire-server run flags (cmd/spire-server/cli/run, and run_posix for -socketPath).
SERVER_RUN_FLAGS = (
    OverrideFlag("bindAddress", "bind_address", "IP address or DNS name the server listens on"),
    OverrideFlag("serverPort", "bind_port", "port the server listens on", int),
    OverrideFlag("dataDir", "data_dir", "directory for the server's runtime data"),
    OverrideFlag("trustDomain", "trust_domain", "the trust domain this server belongs to"),
    OverrideFlag("socketPath", "socket_path", "path of the admin API socket"),
    OverrideFlag("logLevel", "log_level", "'debug', 'info', 'warn' or 'error'"),
    OverrideFlag("logFormat", "log_format", "'text' or 'json'"),
    OverrideFlag("logFile", "log_file", "file to write logs to"),
)

# SPIRE's spire-agent run flags (cmd/spire-agent/cli/run; -joinToken is handled on its own:
# a secret is never put into the config).
AGENT_RUN_FLAGS = (
    OverrideFlag("serverAddress", "server_address", "IP address or DNS name of the server"),
    OverrideFlag("serverPort", "server_port", "port of the server", int),
    OverrideFlag("dataDir", "data_dir", "directory for the agent's runtime data"),
    OverrideFlag("trustDomain", "trust_domain", "the trust domain this agent belongs to"),
    OverrideFlag("socketPath", "socket_path", "path of the Workload API socket"),
    OverrideFlag("trustBundle", "trust_bundle_path", "path to the server's CA bundle"),
    OverrideFlag("trustBundleUrl", "trust_bundle_url", "https URL to download the bundle from"),
    OverrideFlag("joinTokenFile", "join_token_file", "path to a file holding a join token"),
    OverrideFlag(
        "insecureBootstrap", "insecure_bootstrap", "bootstrap without verifying the server", bool
    ),
    OverrideFlag("logLevel", "log_level", "'debug', 'info', 'warn' or 'error'"),
    OverrideFlag("logFormat", "log_format", "'text' or 'json'"),
    OverrideFlag("logFile", "log_file", "file to write logs to"),
)


def add_override_flags(parser: argparse.ArgumentParser, flags: tuple[OverrideFlag, ...]) -> None:
    """``-name`` and ``--name`` for each flag (Go's flag package accepts both)."""
    for f in flags:
        names = (f"-{f.flag}", f"--{f.flag}")
        if f.kind is bool:
            parser.add_argument(*names, dest=f.flag, action="store_true", help=f.help)
        else:
            parser.add_argument(*names, dest=f.flag, type=f.kind, default=None, help=f.help)


def overrides_from(args: argparse.Namespace, flags: tuple[OverrideFlag, ...]) -> Overrides:
    """The keys the given flags set; an unset flag (or an empty string, as in SPIRE) is none."""
    out: dict[str, tuple[Any, str]] = {}
    for f in flags:
        value = getattr(args, f.flag, None)
        if value is None or value == "" or value is False:
            continue
        out[f.key] = (value, f"-{f.flag}")
    return out
