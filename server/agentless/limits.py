"""A per-source limit on token exchanges: a token bucket per caller address that refuses
(HTTP 429) rather than delays, so a flood costs the server no waiting coroutines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_TRACKED_SOURCES = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class SourceRateLimit:
    def __init__(
        self,
        per_second: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,  # real elapsed time, not the CA clock
    ) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, source: str) -> bool:
        """Take one exchange from ``source``'s budget; False when it is spent."""
        if self._rate <= 0:
            return True
        now = self._monotonic()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_SOURCES:
                self._buckets.clear()
            bucket = self._buckets[source] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
