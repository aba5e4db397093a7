"""The token exchange's per-source limit: a burst, then one exchange per 1/rate seconds, each
address on its own budget; 0 turns it off."""

from __future__ import annotations

from plastron.server.agentless.limits import SourceRateLimit


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_per_source() -> None:
    ticks = Ticks()
    limit = SourceRateLimit(2, 3, monotonic=ticks)
    assert [limit.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("10.0.0.2")  # another address has its own budget
    ticks.now += 0.5  # one token back at 2/s
    assert limit.allow("10.0.0.1") and not limit.allow("10.0.0.1")
    ticks.now += 60  # refills up to the burst, not beyond
    assert [limit.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]


def test_zero_rate_is_unlimited() -> None:
    limit = SourceRateLimit(0, 1)
    assert all(limit.allow("10.0.0.1") for _ in range(100))
