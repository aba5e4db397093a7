"""The CA rotator: decides, once per tick, which lifecycle steps are due (SPIRE's rotator).

- prepare the next authority when ``now > notAfter - min(lifetime/2, 30d)``;
- activate it when ``now > notAfter - min(lifetime/6, 7d)`` (preparing first if needed);
- with no usable current authority (first start, or everything expired while down), prepare
  and activate at once;
- destroy OLD keys once their authority has expired; prune the bundle every ``prune_every``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from plastron.clock import Clock
from plastron.errors import PlastronError
from plastron.server.ca.authorities import AuthorityManager
from plastron.server.ca.journal import AuthorityStatus
from plastron.server.ca.slots import X509CA, JwtKey

log = logging.getLogger(__name__)

PREPARE_CAP = dt.timedelta(days=30)
ACTIVATE_CAP = dt.timedelta(days=7)
DEFAULT_INTERVAL = dt.timedelta(seconds=10)
DEFAULT_PRUNE_EVERY = dt.timedelta(hours=6)


def prepare_threshold(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    return not_after - min((not_after - not_before) / 2, PREPARE_CAP)


def activation_threshold(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    return not_after - min((not_after - not_before) / 6, ACTIVATE_CAP)


def _bounds(held: X509CA | JwtKey) -> tuple[dt.datetime, dt.datetime]:
    if isinstance(held, X509CA):
        return held.not_before, held.not_after
    return held.issued_at, held.not_after


def _usable_prepared(held: X509CA | JwtKey | None, now: dt.datetime) -> bool:
    return held is not None and held.status is AuthorityStatus.PREPARED and now < held.not_after


class Rotator:
    def __init__(
        self,
        manager: AuthorityManager,
        clock: Clock,
        *,
        prune_every: dt.timedelta = DEFAULT_PRUNE_EVERY,
    ) -> None:
        self._manager = manager
        self._clock = clock
        self._prune_every = prune_every
        self._last_prune: dt.datetime | None = None
        self.consecutive_failures = 0  # read by the CA-rotator health check

    async def rotate(self) -> None:
        """One tick; raises the first failure (the next tick retries)."""
        async with self._manager.lock:
            await self._manager.destroy_expired_keys()
            await self._rotate_x509()
            await self._rotate_jwt()
            now = self._clock.now()
            if self._last_prune is None or now - self._last_prune >= self._prune_every:
                await self._manager.prune_bundle()
                self._last_prune = now

    async def _rotate_x509(self) -> None:
        m = self._manager
        now = self._clock.now()
        current = m.current_x509
        if current is None or now >= current.not_after:
            if not _usable_prepared(m.next_x509, now):
                await m.prepare_x509()
            await m.activate_x509()
            return
        start, end = _bounds(current)
        if now > prepare_threshold(start, end) and not _usable_prepared(m.next_x509, now):
            await m.prepare_x509()
        if now > activation_threshold(start, end):
            if not _usable_prepared(m.next_x509, now):
                await m.prepare_x509()
            await m.activate_x509()

    async def _rotate_jwt(self) -> None:
        m = self._manager
        now = self._clock.now()
        current = m.current_jwt
        if current is None or now >= current.not_after:
            if not _usable_prepared(m.next_jwt, now):
                await m.prepare_jwt()
            await m.activate_jwt()
            return
        start, end = _bounds(current)
        if now > prepare_threshold(start, end) and not _usable_prepared(m.next_jwt, now):
            await m.prepare_jwt()
        if now > activation_threshold(start, end):
            if not _usable_prepared(m.next_jwt, now):
                await m.prepare_jwt()
            await m.activate_jwt()

    async def run(self, stop: asyncio.Event, interval: dt.timedelta = DEFAULT_INTERVAL) -> None:
        """Tick every ``interval`` until ``stop`` is set; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.rotate()
                self.consecutive_failures = 0
            except PlastronError as exc:
                self.consecutive_failures += 1
                log.error("ca rotation failed failures=%d error=%s", self.consecutive_failures, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval.total_seconds())
