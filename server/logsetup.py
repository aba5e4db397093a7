"""Logging for the server and agent: one line per event, key=value (text) or JSON."""

from __future__ import annotations

import json
import logging
import sys

_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(level: str, fmt: str = "text", file: str = "") -> None:
    # Messages can carry text from untrusted input; one that UTF-8 cannot encode (a lone
    # surrogate) is escaped instead of failing the write, as Python's own stderr does.
    handler: logging.Handler = (
        logging.FileHandler(file, encoding="utf-8", errors="backslashreplace")
        if file
        else logging.StreamHandler(sys.stderr)
    )
    if fmt.lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level.upper(), logging.INFO))
    # grpclib and the SQL stack are chatty at DEBUG; keep them at WARNING.
    for noisy in ("grpclib", "hpack", "h2", "sqlalchemy", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
