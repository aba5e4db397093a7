"""KeyRunner: where KeyManager calls run, and how long the event loop may wait for one."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from plastron.errors import KeyManagerError, Unavailable
from plastron.server.ca.key_runner import KeyRunner


class _Blocking:
    """Only the attribute KeyRunner reads: the KeyManager blocks (like PKCS#11)."""

    blocking = True


def runner(blocking: bool, sync_wait: float = 0.010) -> KeyRunner:
    key_manager = _Blocking() if blocking else object()
    return KeyRunner(key_manager, workers=2, sync_wait=sync_wait)  # type: ignore[arg-type]


async def test_non_blocking_key_managers_run_on_the_loop_thread() -> None:
    keys = runner(blocking=False)
    assert await keys.run(threading.get_ident) == threading.get_ident()


async def test_blocking_key_managers_run_in_the_executor() -> None:
    keys = runner(blocking=True)
    try:
        assert await keys.run(threading.get_ident) != threading.get_ident()
        name = await keys.run(lambda: threading.current_thread().name)
        assert name.startswith("plastron-ca-sign")
    finally:
        keys.close()


async def test_a_fast_call_completes_within_the_synchronous_wait() -> None:
    keys = runner(blocking=True, sync_wait=5.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    try:
        # 50 ms of "HSM" inside a 5 s synchronous wait: the loop is held for the whole call
        def sign() -> int:
            time.sleep(0.05)
            return 7

        assert await keys.run(sign) == 7
        assert ticks == before
    finally:
        task.cancel()
        keys.close()


async def test_a_slow_call_is_awaited_and_the_loop_runs_meanwhile() -> None:
    keys = runner(blocking=True, sync_wait=0.01)
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not release.is_set():
            ticks += 1
            if ticks == 20:
                release.set()  # only the loop running on can let the call finish
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        assert await asyncio.wait_for(keys.run(lambda: release.wait(30) and "signed"), 30) == (
            "signed"
        )
        assert ticks >= 20
    finally:
        release.set()
        await task
        keys.close()


@pytest.mark.parametrize("sync_wait", [5.0, 0.0])
async def test_errors_reach_the_caller_either_way(sync_wait: float) -> None:
    keys = runner(blocking=True, sync_wait=sync_wait)

    def refuse() -> None:
        time.sleep(0.02)
        raise KeyManagerError("pkcs11: token removed")

    try:
        with pytest.raises(KeyManagerError, match="token removed"):
            await keys.run(refuse)
    finally:
        keys.close()


async def test_a_closed_runner_refuses_work() -> None:
    keys = runner(blocking=True)
    keys.close()
    with pytest.raises(Unavailable, match="closed"):
        await keys.run(lambda: None)


async def _released_by_the_loop(keys: KeyRunner, within: float) -> bool:
    """Run a call that only finishes early if the loop runs on while it is in the executor."""
    release = threading.Event()

    async def releaser() -> None:
        await asyncio.sleep(0)
        release.set()

    task = asyncio.create_task(releaser())
    try:
        return await keys.run(release.wait, within)
    finally:
        release.set()
        await task


async def test_after_a_slow_call_the_loop_no_longer_waits_synchronously() -> None:
    keys = runner(blocking=True, sync_wait=0.5)
    try:
        # a first call within the wait holds the loop: the release comes too late
        assert not await _released_by_the_loop(keys, within=0.1)
        await keys.run(time.sleep, 0.7)  # slower than sync_wait: a slow module
        assert await _released_by_the_loop(keys, within=0.3)
        await keys.run(lambda: None)  # fast again: the next call is waited for again
        assert not await _released_by_the_loop(keys, within=0.1)
    finally:
        keys.close()


async def test_no_synchronous_wait_while_another_call_is_in_flight() -> None:
    keys = runner(blocking=True, sync_wait=0.5)
    first_done = threading.Event()
    try:
        first = asyncio.create_task(keys.run(first_done.wait, 30))
        await asyncio.sleep(0.7)  # the first call is now awaited, still in the executor
        assert await _released_by_the_loop(keys, within=0.3)
        first_done.set()
        assert await first
    finally:
        first_done.set()
        keys.close()
