"""Injectable time source: logic asks a Clock, never datetime.now(), so tests can move time."""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Protocol


class Clock(Protocol):
    def now(self) -> _dt.datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    def __init__(self, start: _dt.datetime | None = None) -> None:
        if start is None:
            start = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> _dt.datetime:
        with self._lock:
            return self._now

    def advance(self, delta: _dt.timedelta) -> _dt.datetime:
        with self._lock:
            self._now = self._now + delta
            return self._now

    def set(self, when: _dt.datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock needs timezone-aware times")
        with self._lock:
            self._now = when


def as_utc(when: _dt.datetime, name: str) -> _dt.datetime:
    """``when`` in UTC; ValueError naming ``name`` if it is naive (its zone unknown)."""
    if when.tzinfo is _dt.UTC:  # the server's clock: astimezone() costs a few µs per leaf
        return when
    if when.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {when.isoformat()})")
    return when.astimezone(_dt.UTC)


def to_unix(when: _dt.datetime) -> int:
    """Seconds since the epoch for an aware datetime."""
    return int(when.timestamp())


def from_unix(seconds: int | float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
