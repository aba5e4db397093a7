"""spire.api.server.logger.v1.Logger: the server's log level at run time (admin socket only)."""

from __future__ import annotations

from plastron.log_levels import LoggerMethods
from plastron.proto.spire.api.server.logger.v1 import logger_grpc


class LoggerService(LoggerMethods, logger_grpc.LoggerBase):
    pass
