"""``plastron-agent run`` and ``validate``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from plastron.agent.config import AgentConfig, load_agent_config
from plastron.agent.main import run_agent
from plastron.agent.plugin_loading import check_agent_plugins
from plastron.configs.overrides import AGENT_RUN_FLAGS, overrides_from
from plastron.files import restrict_umask


def _load(args: argparse.Namespace) -> AgentConfig:
    """The file, with SPIRE's override flags (the same for run and validate)."""
    return load_agent_config(
        Path(args.config),
        expand_env=args.expandEnv,
        overrides=overrides_from(args, AGENT_RUN_FLAGS),
    )


async def validate(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    check_agent_plugins(config)
    out.write("Agent configuration file is valid.\n")
    return 0


async def run(args: argparse.Namespace, out: TextIO) -> int:
    # Files and directories are the agent's alone; the Workload API socket and its directory
    # are opened to workloads explicitly (plastron/transport/uds.py sets their exact modes).
    restrict_umask()
    config = _load(args)
    return await run_agent(config, join_token=args.joinToken)
