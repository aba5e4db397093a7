"""Runs KeyManager work where it belongs: inline for memory/disk keys, in a bounded executor
for blocking KeyManagers (``blocking = True``, e.g. PKCS#11), so an HSM round trip never
stalls the event loop and never has more than ``workers`` calls outstanding."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from plastron.errors import Unavailable
from plastron.keymanager import KeyManager

P = ParamSpec("P")
T = TypeVar("T")


class KeyRunner:
    def __init__(self, key_manager: KeyManager, workers: int = 4) -> None:
        self.key_manager = key_manager
        self.blocking = bool(getattr(key_manager, "blocking", False))
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        if self.blocking:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="plastron-ca-sign"
            )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise Unavailable("the CA's key runner is closed")
        if self._executor is None:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
