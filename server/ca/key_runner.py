"""Runs KeyManager work where it belongs: inline for memory/disk keys, in a bounded executor
for blocking KeyManagers (``blocking = True``, e.g. PKCS#11), so a slow or hung HSM never
stalls the event loop for long and never has more than ``workers`` calls outstanding.

The event loop first waits for the executor call synchronously, for at most ``sync_wait``
seconds, and only then awaits it. A PKCS#11 signature releases the GIL three times
(C_SignInit, the C_Sign length query, C_Sign) and each time the signing thread must win it back
from the loop; a loop busy with other requests holds it for up to the 5 ms switch interval, so
awaiting straight away made a SoftHSM2 batch of 50 take several times its signing time (the
convoy in docs/hsm.md). Blocked in ``wait``, the loop holds no GIL and the batch runs at the
module's speed. The loop waits so only when no other call is in flight (a queued call would
hold it for nothing) and the previous call finished within ``sync_wait``: a network HSM slower
than that costs the loop one wait, then its calls are awaited like any other I/O until one is
fast again."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from plastron.errors import Unavailable
from plastron.keymanager import KeyManager, is_blocking
from plastron.server.metrics import KEYMANAGER_SIGN

P = ParamSpec("P")
T = TypeVar("T")

#: Longest the event loop blocks on one KeyManager call before awaiting it instead: a batch of
#: 50 SVIDs signed by SoftHSM2 takes about 5 ms.
SYNC_WAIT = 0.010


class KeyRunner:
    def __init__(
        self,
        key_manager: KeyManager,
        workers: int = 4,
        sync_wait: float = SYNC_WAIT,
        *,
        plugin: str = "",
    ) -> None:
        """``plugin``: the KeyManager's name, labelling the signing-latency metric."""
        self.key_manager = key_manager
        self.plugin = plugin or type(key_manager).__name__
        self.sync_wait = sync_wait
        self.blocking = is_blocking(key_manager)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._in_flight = 0  # executor calls not yet returned; touched on the loop thread only
        self._last_was_slow = False
        if self.blocking:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="plastron-ca-sign"
            )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise Unavailable("the CA's key runner is closed")
        if self._executor is None:
            return fn(*args, **kwargs)
        began = time.monotonic()
        future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        self._in_flight += 1
        try:
            if self._in_flight == 1 and not self._last_was_slow:  # see the module docstring
                concurrent.futures.wait((future,), timeout=self.sync_wait)
            if not future.done():
                await asyncio.wrap_future(future)
        finally:
            self._in_flight -= 1
            self._last_was_slow = time.monotonic() - began > self.sync_wait
        return future.result()

    async def sign(self, kind: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run` for a signing operation, timed into the KeyManager latency metric."""
        started = time.perf_counter()
        try:
            return await self.run(fn, *args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            KEYMANAGER_SIGN.labels(self.plugin, kind).observe(elapsed)

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
