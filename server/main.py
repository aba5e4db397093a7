"""``plastron-server run`` and ``plastron-server validate``."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from plastron.configs.overrides import SERVER_RUN_FLAGS, add_override_flags, overrides_from
from plastron.errors import PlastronError
from plastron.files import check_private_dir, ensure_private_dir, restrict_umask
from plastron.logs import check_log_file, configure_logging
from plastron.server.agentless.http import check_exchange_listener
from plastron.server.ca.config import ca_config
from plastron.server.cli.args import FlagParser, flag
from plastron.server.config import ServerConfig, load_server_config
from plastron.server.federation.endpoint import check_bundle_endpoint
from plastron.server.plugin_loading import check_server_plugins, load_server_plugins
from plastron.server.runtime import PlastronServer

DEFAULT_CONFIG = "conf/server/server.conf"


def load(prog: str, argv: list[str]) -> ServerConfig:
    """The config ``run`` and ``validate`` use: the file, with SPIRE's override flags."""
    parser = FlagParser(prog=prog)
    flag(parser, "config", default=DEFAULT_CONFIG, help="path to the server config file")
    flag(parser, "expandEnv", action="store_true", help="expand $VARS in the config file")
    add_override_flags(parser, SERVER_RUN_FLAGS)
    args = parser.parse_args(argv)
    return load_server_config(
        Path(args.config),
        expand_env=bool(args.expandEnv),
        overrides=overrides_from(args, SERVER_RUN_FLAGS),
    )


async def serve(config: ServerConfig) -> None:
    server = PlastronServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop, sig)
    try:
        await server.wait_stopped()
    finally:
        await server.stop()


def check_config(config: ServerConfig) -> list[str]:
    """What ``validate`` checks and ``run`` checks before it opens anything: every plugin's
    settings and files, the datastore connection string's shape, the CA settings, the serving
    certificates of the bundle endpoint and the agentless exchange, that log_file can be opened,
    an existing data_dir's ownership and mode. Returns SPIRE's warnings (TTLs ca_ttl cannot
    honour)."""
    check_server_plugins(config, load_server_plugins())  # a missing extra: before any file
    warnings = ca_config(config).ttl_warnings()
    check_bundle_endpoint(config.federation.bundle_endpoint, config.config_dir)
    check_exchange_listener(config.agentless_exchange)
    check_log_file(config.log_file, made_by_run=config.data_dir)
    if config.data_dir.exists():
        check_private_dir(config.data_dir, "data_dir")
    return warnings


def run_command(argv: list[str]) -> int:
    restrict_umask()  # the datastore, its -wal/-shm, keys, logs: the server's user's alone
    try:
        config = load("plastron-server run", argv)
        check_config(config)  # run logs the TTL warnings itself, once logging is set up
        ensure_private_dir(config.data_dir, "data_dir")  # before anything (a log) is put there
        configure_logging(config.log_level, config.log_format, config.log_file)
        asyncio.run(serve(config))
    except PlastronError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def validate_command(argv: list[str]) -> int:
    try:
        config = load("plastron-server validate", argv)
        warnings = check_config(config)
    except PlastronError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    print("Configuration is valid.")
    return 0
