"""The server-wide budget of entry pushes (server/api/entrynotifier.py): a token bucket shared
by every open Watch stream.

Each stream already pushes at most once per ``PUSH_MIN_GAP_SECONDS``, but a storm of changes
that reaches every agent (an alias on a selector they all hold, edited in a loop) would still
make each of them sync five times a second. The budget caps pushes across all streams; a
stream over it waits its turn (first come, first served) with its pending flag kept, so a
change is deferred, never dropped, and further changes meanwhile still cost one push.

A push reserves its token before it waits: the reservation is O(1) and fixes its time, so
thousands of deferred streams sleep each until its own slot instead of waking to compete.
Each stream holds at most one reservation, so the backlog (and the longest wait) is bounded
by the number of open streams divided by the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# 10,000 agents reached by one change are all told within one second (the first 5,000 at
# once, the rest at the refill rate); a storm that reaches them all without pause costs
# 5,000 syncs a second (their polls: 2,000 a second at the 5 s sync_interval), not 50,000.
PUSHES_PER_SECOND = 5_000.0
PUSH_BURST = 5_000


class PushBudget:
    """A token bucket of ``rate`` pushes a second holding at most ``burst``."""

    def __init__(
        self,
        rate: float = PUSHES_PER_SECOND,
        burst: int = PUSH_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"push budget: rate {rate} and burst {burst} must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        """May go negative: tokens reserved by streams still waiting for their slot."""
        self._updated = clock()
        self.deferred = 0
        """Pushes that had to wait for their slot (the budget was spent)."""

    def reserve(self) -> float:
        """Take one push's token; the seconds to wait before sending it (0: send now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        self.deferred += 1
        return -self._tokens / self.rate
