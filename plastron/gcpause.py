"""Pausing the cyclic garbage collector while a large structure is built.

Building 100,000 registration entries allocates about a million tracked objects; the
collector then runs its full collection again and again over everything built so far (it was
more than half of the CPU of a full entry read). None of it is cyclic garbage, so the
collector is paused for the build and resumed (if it was on) when the last pause ends;
reference counting still frees everything as usual. The pause is process-wide: keep it to
one bulk build.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled  # noqa: PLW0603 - one process-wide pause count
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
