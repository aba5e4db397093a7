"""Per-subsystem health of the server: datastore, CA (which covers the KeyManager/HSM), API.

SPIRE checks subsystems periodically; we check on demand with a short cache so a health poll
storm cannot turn into an HSM signing storm. A subsystem is healthy when its last check passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CACHE_SECONDS = 1.0
CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class SubsystemStatus:
    name: str
    healthy: bool
    detail: str = ""


class HealthChecker:
    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], Awaitable[None]]] = {}
        self._last: tuple[float, list[SubsystemStatus]] | None = None
        self._lock = asyncio.Lock()

    def add(self, name: str, check: Callable[[], Awaitable[None]]) -> None:
        self._checks[name] = check

    async def statuses(self) -> list[SubsystemStatus]:
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < CACHE_SECONDS:
                return self._last[1]
            out = []
            for name, check in self._checks.items():
                try:
                    await asyncio.wait_for(check(), CHECK_TIMEOUT)
                    out.append(SubsystemStatus(name, True))
                except TimeoutError:
                    out.append(
                        SubsystemStatus(name, False, f"check timed out after {CHECK_TIMEOUT:g}s")
                    )
                except Exception as exc:  # any failure means unhealthy; the reason is reported
                    out.append(SubsystemStatus(name, False, f"{type(exc).__name__}: {exc}"))
            self._last = (now, out)
            return out

    def last_statuses(self) -> list[SubsystemStatus]:
        """The result of the last check (empty before the first), without checking again."""
        last = self._last
        return [] if last is None else list(last[1])

    def invalidate(self) -> None:
        """Forget the cached result: the next poll checks every subsystem again."""
        self._last = None

    async def healthy(self) -> bool:
        return all(s.healthy for s in await self.statuses())
