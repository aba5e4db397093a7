"""The process's log level changed at run time: the Logger API of the server and the agent.

SPIRE's Logger service (server and agent alike) reports the level in force and the level the
process was launched with, sets a new one and resets to the launch level. Python has no TRACE
level, so TRACE filters as DEBUG does; the name is kept so GetLogger answers what was set.
The launch level is what ``configure_logging`` was given (``log_level``/``-logLevel``).
"""

from __future__ import annotations

import logging
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.logs import LEVELS, launch_level_name
from plastron.proto.spire.api.types import logger_pb2

log = logging.getLogger(__name__)

# The API's enum names, which are also SPIRE's (logrus) level names in upper case.
API_LEVEL_NAMES = ("PANIC", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE")


def api_level_name(name: str) -> str:
    """A configured level name (``warning`` included) as the API's enum name."""
    upper = name.upper()
    return "WARN" if upper == "WARNING" else upper


class LogLevelControl:
    """The root logger's level by API name, and the launch level to reset to."""

    def __init__(self, launch: str | None = None) -> None:
        self.launch = api_level_name(launch or launch_level_name())
        self.current = self.launch

    def set(self, name: str) -> None:
        self.current = api_level_name(name)
        logging.getLogger().setLevel(LEVELS[self.current])

    def reset(self) -> None:
        self.set(self.launch)

    def message(self) -> logger_pb2.Logger:
        return logger_pb2.Logger(
            current_level=self.current,
            launch_level=self.launch,
        )


class LoggerMethods:
    """GetLogger, SetLogLevel and ResetLogLevel; mixed into the server's and the agent's
    generated ``LoggerBase`` (the two services differ only in their proto package)."""

    def __init__(self, control: LogLevelControl) -> None:
        self.control = control

    async def GetLogger(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(self.control.message())

    async def SetLogLevel(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        level = 0 if req is None else int(req.new_level)
        if level == logger_pb2.UNSPECIFIED:
            raise GRPCError(
                Status.INVALID_ARGUMENT, "newLevel value cannot be LogLevel_UNSPECIFIED"
            )
        if level not in logger_pb2.LogLevel.values():
            raise GRPCError(Status.INVALID_ARGUMENT, f"unsupported log level {level}")
        name = logger_pb2.LogLevel.Name(level)
        log.info("log level changed new_level=%s", name.lower())
        self.control.set(name)
        await stream.send_message(self.control.message())

    async def ResetLogLevel(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        log.info("log level reset launch_level=%s", self.control.launch.lower())
        self.control.reset()
        await stream.send_message(self.control.message())
