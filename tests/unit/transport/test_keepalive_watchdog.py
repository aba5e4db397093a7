"""The client keepalive's timer (plastron/transport/keepalive.py) on a stand-in connection: it
PINGs a silent connection only while a call is open, keeps one that answers, and aborts one that
does not, once. Deadlines are generous polls, never exact times."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from plastron.transport.keepalive import MIN_KEEPALIVE_TIME, Keepalive, KeepaliveWatchdog

KEEPALIVE = Keepalive(time=MIN_KEEPALIVE_TIME, timeout=0.2)
DEADLINE = 30.0


class StandIn:
    def __init__(self, *, open_calls: bool, answers: bool) -> None:
        self.open_calls = open_calls
        self.answers = answers
        self.pings = 0
        self.aborted = 0
        self.watchdog: KeepaliveWatchdog | None = None

    def has_open_calls(self) -> bool:
        return self.open_calls

    def send_ping(self, opaque: bytes) -> None:
        self.pings += 1
        if self.answers and self.watchdog is not None:
            watchdog = self.watchdog
            asyncio.get_running_loop().call_soon(watchdog.received)  # the PING ACK

    def abort(self) -> None:
        self.aborted += 1


def watched(conn: StandIn) -> KeepaliveWatchdog:
    conn.watchdog = KeepaliveWatchdog(conn, KEEPALIVE, "server:8081")
    conn.watchdog.start()
    return conn.watchdog


async def until(what: str, condition: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"{what}: not within {DEADLINE:g}s")
        await asyncio.sleep(0.05)


async def test_a_silent_connection_with_a_call_open_is_pinged_then_aborted_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = StandIn(open_calls=True, answers=False)
    watchdog = watched(conn)
    await until("aborted", lambda: conn.aborted)
    await asyncio.sleep(KEEPALIVE.time + KEEPALIVE.timeout)  # nothing more happens after
    watchdog.stop()
    assert (conn.pings, conn.aborted) == (1, 1)
    assert watchdog.expired
    gave_up = [r for r in caplog.records if "keepalive PING unanswered" in r.getMessage()]
    assert len(gave_up) == 1 and "server:8081" in gave_up[0].getMessage()


async def test_a_connection_that_answers_is_pinged_again_and_kept() -> None:
    conn = StandIn(open_calls=True, answers=True)
    watchdog = watched(conn)
    await until("pinged twice", lambda: conn.pings >= 2)
    watchdog.stop()
    assert conn.aborted == 0 and not watchdog.expired


async def test_an_idle_connection_is_never_pinged() -> None:
    """No call open: gRPC's keepalive_permit_without_calls = false (a server may count PINGs
    on an idle connection against the client)."""
    conn = StandIn(open_calls=False, answers=False)
    watchdog = watched(conn)
    await asyncio.sleep(KEEPALIVE.time * 2 + KEEPALIVE.timeout)
    watchdog.stop()
    assert (conn.pings, conn.aborted) == (0, 0)


async def test_a_connection_busy_receiving_needs_no_ping() -> None:
    conn = StandIn(open_calls=True, answers=False)
    watchdog = watched(conn)
    loop = asyncio.get_running_loop()
    end = loop.time() + KEEPALIVE.time * 2 + KEEPALIVE.timeout
    while loop.time() < end:  # a byte from the server every tenth of the keepalive time
        watchdog.received()
        await asyncio.sleep(KEEPALIVE.time / 10)
    watchdog.stop()
    assert (conn.pings, conn.aborted) == (0, 0)


@pytest.mark.parametrize(("time", "timeout"), [(0.5, 10.0), (30.0, 0.0)])
def test_a_keepalive_below_the_floor_is_refused(time: float, timeout: float) -> None:
    with pytest.raises(ValueError, match="keepalive"):
        Keepalive(time=time, timeout=timeout)


async def test_without_calls_an_idle_silent_connection_is_probed_too() -> None:
    """The server's keepalive: a vanished peer's idle connection is not held for good."""
    conn = StandIn(open_calls=False, answers=False)
    conn.watchdog = KeepaliveWatchdog(
        conn, Keepalive(MIN_KEEPALIVE_TIME, 0.2, without_calls=True), "connection from x"
    )
    conn.watchdog.start()
    await until("aborted", lambda: conn.aborted)
    conn.watchdog.stop()
    assert (conn.pings, conn.aborted) == (1, 1)
