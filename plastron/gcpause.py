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
import time
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


# Below this many frozen objects a thaw is cheap and memory is no concern: thaw only on time.
_MIN_FROZEN_FOR_GROWTH_THAW = 50_000


class LongLivedFreezer:
    """Keeps the long-lived objects of a serving process out of every full collection.

    A full (generation 2) collection walks every tracked object alive; the agent's, with
    10,000 cached SVIDs (about 20 tracked objects each, most of them the certificates' parsed
    extensions) and 1,000 open streams (about 170 each: the HTTP/2 connection, grpclib's
    stream, tasks, events) walked 450,000 and paused the event loop for 80-180 ms, which a new
    caller saw as its first message's delay. Each held stream also made the next full
    collection longer. While installed, whatever survives a full collection is frozen
    (``gc.freeze()``) at the end of it, so the next one walks only what became long-lived
    since.

    Frozen objects that later become cyclic garbage (a closed connection's) are not reclaimed
    until everything is thawed and walked by one full collection: every ``thaw_every`` seconds
    (:meth:`thaw_if_due`, from the process's loop), and as soon as the frozen set has grown
    past ``growth`` times its size after the last thaw (checked at each full collection), so
    such garbage stays bounded by a share of the live set.
    """

    def __init__(
        self,
        *,
        thaw_every: float = 3600.0,
        growth: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._thaw_every = thaw_every
        self._growth = growth
        self._clock = clock
        self._last_thaw = clock()
        self._frozen_after_thaw = gc.get_freeze_count()
        self._thawing = False
        self.thaws = 0

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        # Called by the collector itself; freezing here moves exactly the survivors.
        if phase != "stop" or info.get("generation") != 2:
            return
        gc.freeze()
        if self._thawing:  # this one walked everything: what survived is the live set
            self._thawed()
        elif self._grown():
            # Past the bound: the next full collection walks everything and frees the frozen
            # garbage (checked here, not only on the loop, so a burst of closed connections
            # cannot pile up between two checks).
            gc.unfreeze()
            self._thawing = True

    def _grown(self) -> bool:
        floor = max(_MIN_FROZEN_FOR_GROWTH_THAW, self._frozen_after_thaw)
        return gc.get_freeze_count() > self._growth * floor

    def _thawed(self) -> None:
        self._thawing = False
        self._last_thaw = self._clock()
        self._frozen_after_thaw = gc.get_freeze_count()
        self.thaws += 1

    def install(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def __enter__(self) -> LongLivedFreezer:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def settle(self) -> None:
        """One full collection now, its survivors frozen: after a process has built what it
        will keep (the agent's first sync), so the first automatic one does not walk it."""
        gc.collect()  # if installed, its callback may have thawed: this freezes them all
        gc.freeze()
        self._thawing = False
        self._frozen_after_thaw = gc.get_freeze_count()

    def thaw_if_due(self) -> bool:
        """Thaw and collect once (one full pause) if ``thaw_every`` has passed; True if it did.

        Growth is checked at full collections only: counting the frozen set walks it (2.6 ms
        for 450,000 objects), too long to do on the loop after every sync."""
        if self._clock() - self._last_thaw < self._thaw_every:
            return False
        self._thawing = True
        thaw_and_collect()  # its survivors are frozen again (see _on_collection)
        if self._thawing:  # not installed: nothing froze them
            self._thawed()
        return True
