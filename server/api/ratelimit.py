"""Per-source-IP rate limits for attestation and signing, as SPIRE's (limits.go).

Like SPIRE, callers over the limit are delayed rather than refused: a token bucket per IP
(rate = burst = the limit per second) and a wait for the tokens a request needs. A request
that asks for more than one second's worth at once is refused (a batch larger than the limit).
Local (admin-socket) callers are not limited.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from plastron.errors import InvalidArgument

ATTEST_PER_SECOND = 1
SIGN_PER_SECOND = 500
_MAX_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_second: int, *, enabled: bool = True) -> None:
        self._rate = float(per_second)
        self._enabled = enabled
        self._buckets: dict[str, _Bucket] = {}
        self._lock = asyncio.Lock()

    async def wait(self, key: str, count: int = 1) -> None:
        if not self._enabled or count <= 0:
            return
        if count > self._rate:
            raise InvalidArgument(
                f"rate limit exceeded: {count} requested at once, limit is {int(self._rate)}/s"
            )
        async with self._lock:
            now = time.monotonic()  # rate limiting is about real elapsed time, not the CA clock
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_TRACKED:
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(self._rate, now)
            bucket.tokens = min(self._rate, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            bucket.tokens -= count
            delay = -bucket.tokens / self._rate if bucket.tokens < 0 else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
