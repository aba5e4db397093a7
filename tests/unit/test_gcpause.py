"""The collector pause nests and restores the collector's state; a frozen build is out of
the collector's sight until the next one replaces it."""

from __future__ import annotations

import gc
import weakref

from plastron.gcpause import freeze_after, gc_paused, thaw_and_collect


class Node:
    me: object = None


def test_pauses_nest_and_restore_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_frozen_build_is_thawed_and_collected_before_the_next() -> None:
    held: dict[str, object] = {}
    try:
        freeze_after(lambda: held.update(build=[object() for _ in range(1000)]))
        assert gc.get_freeze_count() >= 1000 and gc.isenabled()
        cycle = Node()
        cycle.me = cycle
        alive = weakref.ref(cycle)
        freeze_after(lambda: None)  # the cycle is frozen while still in use ...
        del cycle  # ... then becomes garbage that collections skip
        gc.collect()
        assert alive() is not None
        thaw_and_collect()
        assert alive() is None and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
