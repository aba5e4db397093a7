"""Logging for the server and the agent: one line per event that log tools can read.

``log_format = "text"`` is logfmt (``time=… level=info msg="server started" trust_domain=…``),
every value that is not a bare word quoted with JSON string escapes, so a value never spans
lines and never appears as a Python repr; ``"json"`` is one JSON object per line with each
field its own key. Both carry the same fields.

Fields come from two places:

- ``extra=fields(key=value, ...)`` on the logging call, for new code;
- the trailing ``key=%s`` placeholders of the message template, so the existing calls
  (``log.info("agent attested agent_id=%s type=%s", agent_id, kind)``) yield ``msg="agent
  attested"`` with ``agent_id`` and ``type`` as fields without being rewritten. The template,
  not the rendered text, is parsed: a value with spaces or ``=`` in it stays one field.
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from plastron.errors import ConfigError

LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "PANIC": logging.CRITICAL,
}
# The fixed keys of every line; a field with one of these names is written as "fields.<name>".
RESERVED = ("time", "level", "msg", "logger", "exception")
_FIELDS_ATTR = "plastron_fields"
# grpclib and the SQL stack are chatty at DEBUG; they stay at WARNING.
_NOISY = ("grpclib", "hpack", "h2", "sqlalchemy", "alembic", "asyncio", "botocore", "urllib3")
_TRAILING_FIELD = re.compile(r" ([A-Za-z_][\w.]*)=(%[-#0 +]?\d*(?:\.\d+)?[sdifrx])$")
_PLACEHOLDER = re.compile(r"%[-#0 +]?\d*(?:\.\d+)?[sdifrxXeEgGoc]")
_BARE = re.compile(r"[A-Za-z0-9_./:@+,\-]+")
# The level name configure_logging was last given: the Logger API's launch level.
_launch_level = "INFO"


def launch_level_name() -> str:
    """The level name the process's logging was configured with (upper case)."""
    return _launch_level


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra=`` of a logging call that carries structured fields."""
    return {_FIELDS_ATTR: values}


def _plain(value: Any) -> Any:
    """A JSON-able value: numbers, booleans and lists stay typed, anything else is its str()."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def split_template(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The record's message without its trailing ``key=%s`` fields, and those fields."""
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple) or not args:
        return record.getMessage(), {}
    keys: list[tuple[str, str]] = []
    while match := _TRAILING_FIELD.search(template):
        keys.append((match.group(1), match.group(2)))
        template = template[: match.start()]
    n_prefix = len(_PLACEHOLDER.findall(template.replace("%%", "")))
    if not keys or n_prefix + len(keys) != len(args):
        return record.getMessage(), {}
    try:
        message = template % args[:n_prefix] if n_prefix else template.replace("%%", "%")
    except (TypeError, ValueError):
        return record.getMessage(), {}
    found: dict[str, Any] = {}
    for (key, spec), value in zip(reversed(keys), args[n_prefix:], strict=True):
        found[key] = value if spec in ("%s", "%r", "%d") else _format_one(spec, value)
    return message, found


def _format_one(spec: str, value: Any) -> Any:
    try:
        return spec % (value,)
    except (TypeError, ValueError):
        return str(value)


def record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The message and every field of a record, values made JSON-able."""
    message, found = split_template(record)
    extra = getattr(record, _FIELDS_ATTR, None)
    if isinstance(extra, Mapping):
        found.update(extra)
    out: dict[str, Any] = {}
    for key, value in found.items():
        out[f"fields.{key}" if key in RESERVED else key] = _plain(value)
    return message, out


def _timestamp(record: logging.LogRecord) -> str:
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _level(record: logging.LogRecord) -> str:
    return record.levelname.lower()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, logger, then each field as its own key."""

    def format(self, record: logging.LogRecord) -> str:
        message, extra = record_fields(record)
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": _level(record),
            "msg": message,
            "logger": record.name,
            **extra,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def logfmt_value(value: Any) -> str:
    """One logfmt value: a bare word as is, anything else a JSON string (escapes included)."""
    value = _plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""'
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text)


class LogfmtFormatter(logging.Formatter):
    """``time=… level=… msg="…" logger=… key=value …`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message, extra = record_fields(record)
        pairs = [
            ("time", _timestamp(record)),
            ("level", _level(record)),
            ("msg", message),
            ("logger", record.name),
            *extra.items(),
        ]
        if record.exc_info:
            pairs.append(("exception", self.formatException(record.exc_info)))
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in pairs)


def open_log_file(path: str) -> TextIO:
    """``log_file``: appended to, created 0600 (it can name callers and entries)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open log_file {path}: {exc.strerror}") from exc
    # Messages can carry text from untrusted input; one that UTF-8 cannot encode (a lone
    # surrogate) is escaped instead of failing the write, as Python's own stderr does.
    return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


def check_log_file(path: str, made_by_run: Path | None = None) -> None:
    """``validate``, and ``run`` before it makes anything: ``log_file`` (when set) could be
    opened as :func:`open_log_file` opens it, the same error otherwise; nothing is created.
    ``made_by_run``: a directory run makes before it opens the log (the server's data_dir),
    fine as the file's directory while it does not exist yet."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        problem = errno.EISDIR if os.path.isdir(path) else None
        writable = os.access(path, os.W_OK)
    elif made_by_run is not None and parent == os.path.abspath(made_by_run):
        return  # run checks that data_dir can be made, and makes it private
    else:
        problem = None if os.path.isdir(parent) else errno.ENOENT
        writable = os.access(parent, os.W_OK | os.X_OK)
    if problem is None and not writable:
        problem = errno.EACCES
    if problem is not None:
        raise ConfigError(f"cannot open log_file {path}: {os.strerror(problem)}")


def configure_logging(level: str, fmt: str = "text", file: str = "") -> None:
    """Route every logger of the process to one handler in the configured format."""
    global _launch_level  # noqa: PLW0603 - logging is process-wide state too
    _launch_level = level.upper() if level.upper() in LEVELS else "INFO"
    stream = open_log_file(file) if file else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level.upper(), logging.INFO))
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
