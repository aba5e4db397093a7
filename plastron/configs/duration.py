"""Durations written the way SPIRE writes them: one parser, Go's ``time.ParseDuration`` forms
(``"1h30m"``, ``"1.5h"``, ``"500ms"``), for config values and CLI flags alike.

:func:`parse_go_duration` is Go's grammar exactly, as SPIRE's duration flags (``x509 mint
-ttl``, ``jwt mint -ttl``) take it: a bare number other than ``0`` has no unit and is refused.
:func:`parse_duration`, for config values, also takes integer seconds (``ca_ttl = 3600``, or
quoted as SPIRE's sample configs quote ports). Neither takes a negative duration.
"""

from __future__ import annotations

import datetime as dt
import re
from fractions import Fraction

from plastron.errors import ConfigError

MAX_DURATION_TEXT = 64
# Far beyond any sensible TTL, and far inside what timedelta can hold.
MAX_DURATION = dt.timedelta(days=100 * 366)

_UNIT_SECONDS: dict[str, Fraction] = {
    "ns": Fraction(1, 1_000_000_000),
    "us": Fraction(1, 1_000_000),
    "\u00b5s": Fraction(1, 1_000_000),  # micro sign
    "\u03bcs": Fraction(1, 1_000_000),  # Greek mu
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def _parse_go_duration(text: str, where: str) -> Fraction:
    if text == "0":
        return Fraction(0)
    if not text:
        raise ConfigError(f"{where} is an empty duration")
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text):
        raise ConfigError(
            f"{where}: missing unit in duration {text!r} (write {text}s, {text}m or {text}h)"
        )
    total = Fraction(0)
    pos = 0
    while pos < len(text):
        match = _TERM.match(text, pos)
        if match is None:
            raise ConfigError(
                f'{where} is not a duration: {text!r} (use forms like "24h", "1h30m", "90s",'
                ' "500ms", or an integer number of seconds)'
            )
        total += Fraction(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


def _bounded(seconds: Fraction, value: object, where: str) -> dt.timedelta:
    if seconds < 0:
        raise ConfigError(f"{where} must not be negative ({value!r})")
    if seconds > Fraction(int(MAX_DURATION.total_seconds())):
        raise ConfigError(f"{where} is longer than {MAX_DURATION.days} days ({value!r})")
    return dt.timedelta(microseconds=round(seconds * 1_000_000))


def _go_text(text: str, where: str) -> Fraction:
    if len(text) > MAX_DURATION_TEXT:
        raise ConfigError(f"{where} is longer than {MAX_DURATION_TEXT} characters")
    if text.startswith("-"):
        raise ConfigError(f"{where} must not be negative ({text!r})")
    return _parse_go_duration(text.removeprefix("+"), where)


def parse_go_duration(text: str, where: str = "duration") -> dt.timedelta:
    """A non-negative duration in Go's ``time.ParseDuration`` grammar; ``where`` (a flag such
    as ``-ttl``, or a config path) names it in errors."""
    return _bounded(_go_text(text, where), text, where)


def parse_duration(value: object, where: str = "duration") -> dt.timedelta:
    """A non-negative duration from ``"1h30m"``-style text or an integer number of seconds.

    ``where`` is the dotted config path used in error messages.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a duration, not a boolean")
    if isinstance(value, int):
        seconds = Fraction(value)
    elif isinstance(value, str):
        if value.isdigit() and value.isascii() and len(value) <= MAX_DURATION_TEXT:
            seconds = Fraction(int(value))  # integer seconds: config values only
        else:
            seconds = _go_text(value, where)
    else:
        raise ConfigError(f"{where} must be a duration string or integer seconds")
    return _bounded(seconds, value, where)


def format_duration(value: dt.timedelta) -> str:
    """Go-style text for a duration (``1h30m``, ``500ms``); inverse of parse_duration."""
    micros = value // dt.timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    parts: list[str] = []
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds:
        parts.append(f"{seconds}s")
    if micros:
        parts.append(f"{micros}us")
    return "".join(parts)
