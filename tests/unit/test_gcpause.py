"""The collector pause nests and restores the collector's state; a frozen build is out of
the collector's sight until the next one replaces it."""

from __future__ import annotations

import gc
import weakref

from plastron.gcpause import LongLivedFreezer, freeze_after, gc_paused, thaw_and_collect


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    node = Node()
    node.me = node
    return node, weakref.ref(node)


def test_survivors_of_a_full_collection_are_frozen_while_installed() -> None:
    # whatever earlier tests in this process left frozen must not make the freezer see
    # growth and thaw (that is the next tests' subject), so start from nothing frozen and
    # with no growth bound
    gc.unfreeze()
    freezer = LongLivedFreezer(growth=float("inf"))
    kept = [Node() for _ in range(1000)]
    try:
        with freezer:
            gc.collect()
            assert gc.get_freeze_count() >= len(kept)
        gc.unfreeze()
        gc.collect()  # uninstalled: a full collection freezes nothing
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_cyclic_garbage_frozen_while_alive_is_reclaimed_when_the_thaw_is_due() -> None:
    clock = FakeClock()
    freezer = LongLivedFreezer(thaw_every=60.0, clock=clock)
    try:
        with freezer:
            freezer.settle()
            node, alive = _cycle()
            gc.collect()  # survives: frozen
            del node  # now cyclic garbage the collector no longer looks at
            gc.collect()
            assert alive() is not None
            clock.now = 59.0
            assert not freezer.thaw_if_due()
            assert alive() is not None
            clock.now = 60.0
            assert freezer.thaw_if_due()
            assert alive() is None and freezer.thaws == 1
            assert gc.get_freeze_count() > 0  # what is still alive is frozen again
            assert not freezer.thaw_if_due()  # the next one is due a full interval later
    finally:
        gc.unfreeze()


def test_a_frozen_set_grown_past_the_bound_is_walked_by_the_next_full_collection() -> None:
    freezer = LongLivedFreezer(thaw_every=3600.0, growth=1.5, clock=FakeClock())
    try:
        with freezer:
            freezer.settle()
            base = gc.get_freeze_count()
            node, alive = _cycle()
            gc.collect()
            del node
            gc.collect()  # grown by one object: still frozen, not reclaimed
            assert alive() is not None and freezer.thaws == 0
            grown = [Node() for _ in range(int(1.5 * max(base, 50_000)) + 1)]
            # Survivors frozen, past the bound: all thawed for the next full collection (an
            # automatic one during the build above may already have been that one).
            gc.collect()
            gc.collect()
            assert alive() is None and freezer.thaws == 1
            assert gc.get_freeze_count() >= len(grown)  # the live set, frozen again
            assert not freezer.thaw_if_due()
    finally:
        gc.unfreeze()
