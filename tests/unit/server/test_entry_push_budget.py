"""The server-wide push budget (server/pushbudget.py): pushes over it wait for their slot,
first come first served, and none is refused."""

from __future__ import annotations

import pytest

from plastron.server.pushbudget import PUSH_BURST, PUSHES_PER_SECOND, PushBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pushes_within_the_burst_go_at_once_and_the_rest_wait_their_turn() -> None:
    clock = FakeClock()
    budget = PushBudget(rate=10, burst=3, clock=clock)
    waits = [budget.reserve() for _ in range(6)]
    assert waits[:3] == [0, 0, 0]
    # Deferred, not dropped: each later push has its own slot, one refill apart, in order.
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])
    assert budget.deferred == 3


def test_the_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    budget = PushBudget(rate=10, burst=3, clock=clock)
    for _ in range(3):
        budget.reserve()
    clock.now += 0.2  # two tokens back
    assert [budget.reserve(), budget.reserve()] == [0, 0]
    assert budget.reserve() > 0
    clock.now += 3600  # a quiet hour refills the burst, no more
    assert [budget.reserve() for _ in range(3)] == [0, 0, 0]
    assert budget.reserve() > 0


def test_reserved_slots_are_paid_back_before_new_pushes_go() -> None:
    """Streams still waiting keep their place: a newcomer waits behind them."""
    clock = FakeClock()
    budget = PushBudget(rate=10, burst=1, clock=clock)
    assert budget.reserve() == 0
    assert budget.reserve() == pytest.approx(0.1)
    clock.now += 0.1  # the waiting push's slot has come, none free yet
    assert budget.reserve() == pytest.approx(0.1)


def test_the_default_tells_ten_thousand_agents_of_one_change_within_two_seconds() -> None:
    clock = FakeClock()
    budget = PushBudget(clock=clock)
    longest = max(budget.reserve() for _ in range(10_000))
    assert longest <= 2.0
    assert (budget.rate, budget.burst) == (PUSHES_PER_SECOND, PUSH_BURST)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_budget_that_allows_nothing_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="push budget"):
        PushBudget(rate=rate, burst=burst)
