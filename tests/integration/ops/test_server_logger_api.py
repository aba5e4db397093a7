"""The server's Logger API on its admin socket, through ``plastron-server logger`` and raw
gRPC, against a real ``plastron-server run``: the level changes what the server logs at run
time and reset returns to the configured level."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from tests.integration.security.server_process import ServerProcess, remove_base, short_base


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    base = short_base("pl-logger-")
    proc = ServerProcess(base)  # log_level = "DEBUG"
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        remove_base(base)


def logger_cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plastron.server.cli.main", "logger", *args,
         "-socketPath", server.socket_path],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def attest_and_read_new_log(server: ServerProcess) -> str:
    """Attest one agent (logged at INFO: "agent attested") and return what the log gained."""
    before = server.log_path.stat().st_size

    async def attest() -> None:
        try:
            await server.attest_agent()
        finally:
            server.close_channels()

    asyncio.run(attest())
    with server.log_path.open("rb") as log:
        log.seek(before)
        return log.read().decode(errors="replace")


def test_get_set_reset_change_what_the_server_logs(server: ServerProcess) -> None:
    got = logger_cli(server, "get")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "Logger Level : debug\nLaunch Level : debug\n\n"

    raised = logger_cli(server, "set", "-level", "ERROR")
    assert raised.stdout == "Logger Level : error\nLaunch Level : debug\n\n", raised.stderr
    assert "agent attested" not in attest_and_read_new_log(server)

    reset = logger_cli(server, "reset", "-output", "json")
    assert json.loads(reset.stdout) == {"current_level": "DEBUG", "launch_level": "DEBUG"}
    assert "agent attested" in attest_and_read_new_log(server)


def test_bad_levels_are_refused(server: ServerProcess) -> None:
    out = logger_cli(server, "set", "-level", "loud")
    assert out.returncode == 1
    assert out.stderr == "Error: the value 'loud' is not a valid setting\n"
    assert logger_cli(server, "set").stderr == "Error: a value (-level) must be set\n"

    async def set_raw(level: int) -> GRPCError:
        stub = logger_grpc.LoggerStub(server.local())
        try:
            with pytest.raises(GRPCError) as caught:
                await stub.SetLogLevel(logger_pb2.SetLogLevelRequest(new_level=level))  # type: ignore[arg-type]
            return caught.value
        finally:
            server.close_channels()

    unspecified = asyncio.run(set_raw(0))
    assert unspecified.status == Status.INVALID_ARGUMENT
    assert unspecified.message == "newLevel value cannot be LogLevel_UNSPECIFIED"
    unknown = asyncio.run(set_raw(42))
    assert unknown.status == Status.INVALID_ARGUMENT
    assert unknown.message == "unsupported log level 42"
    assert "Logger Level : debug" in logger_cli(server, "get").stdout
