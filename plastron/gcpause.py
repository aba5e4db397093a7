"""Pausing the cyclic garbage collector while a large structure is built.

Building 100,000 registration entries allocates about a million tracked objects; the
collector then runs its full collection again and again over everything built so far (it was
more than half of the CPU of a full entry read). None of it is cyclic garbage, so the
collector is paused for the build and resumed (if it was on) when the last pause ends;
reference counting still frees everything as usual. The pause is process-wide: keep it to
one bulk build.

Once built, such a structure lives until the next build; :func:`freeze_after` hands
everything alive then to ``gc.freeze()``, so the collections in between skip it. Without that,
every full collection walked all of it: with 100,000 entries cached one took 0.35-0.6 s, an
event-loop pause that showed as a quarter-second p99 in agent syncs and entry create →
visible. Frozen objects that become cyclic garbage are reclaimed by :func:`thaw_and_collect`,
one full collection before the next build (hourly, for the entry cache).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
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


def thaw_and_collect() -> None:
    """Undo the last freeze and run one full collection (frees cycles frozen since)."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()


def freeze_after(replace: Callable[[], None]) -> None:
    """Run ``replace`` (swap a new structure in for the old one), then freeze everything
    alive, with no collection in between (the old structure goes by reference counting)."""
    with gc_paused():
        replace()
        gc.freeze()
