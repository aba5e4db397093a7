"""Concurrent refreshes of the authorized-entry cache: calls that arrive while one is reading
share the next one, which still sees every write made before each call (server/entrycache.py).
"""

from __future__ import annotations

import asyncio

import pytest

from plastron.clock import ManualClock
from plastron.datastore import ChangeBatch
from plastron.errors import DataStoreError
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.spiffe.ids import SpiffeId, TrustDomain

TD = TrustDomain("example.org")


def agent(n: int) -> SpiffeId:
    return SpiffeId(TD, f"/spire/agent/x/{n}")


def alias(n: int) -> RegistrationEntry:
    """A node alias held by the agent whose node selectors include ``x:n:<n>``."""
    return RegistrationEntry(
        entry_id=f"alias-{n}",
        spiffe_id=SpiffeId(TD, f"/alias/{n}"),
        parent_id=SpiffeId(TD, "/spire/server"),
        selectors=(Selector("x", f"n:{n}"),),
    )


def aliased(cache: AuthorizedEntryCache, n: int) -> bool:
    """Whether the cache has applied agent ``n``'s node selectors."""
    return [e.entry_id for e in cache.matching_aliases(agent(n))] == [f"alias-{n}"]


class NodeOnlySource:
    """Node events and selectors as a datastore would hold them; each read of the changes takes
    its snapshot at once and can be held at ``gate`` to keep a refresh in flight."""

    def __init__(self) -> None:
        self.selectors: dict[SpiffeId, tuple[Selector, ...]] = {}
        self.events: list[tuple[int, str]] = []
        self.event_reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_read: tuple[int, Exception] | None = None  # (which read, its error)

    def attest(self, n: int) -> None:
        self.selectors[agent(n)] = (Selector("x", f"n:{n}"),)
        self.events.append((len(self.events) + 1, str(agent(n))))

    async def list_all_entries(self) -> list[RegistrationEntry]:
        return [alias(n) for n in range(1, 5)]

    async def list_node_selectors(self) -> dict[SpiffeId, tuple[Selector, ...]]:
        return dict(self.selectors)

    async def read_changes(self, entry_after: int, node_after: int, limit: int) -> ChangeBatch:
        self.event_reads += 1
        read = self.event_reads
        events = [e for e in self.events if e[0] > node_after][:limit]
        named = {sid for _, sid in events}
        batch = ChangeBatch(
            entry_events=[],
            entries={},
            node_events=events,
            node_selectors={str(k): v for k, v in self.selectors.items() if str(k) in named},
        )  # read at once, answered when the gate opens
        await self.gate.wait()
        if self.fail_read is not None and self.fail_read[0] == read:
            raise self.fail_read[1]
        return batch

    async def latest_event_ids(self) -> tuple[int, int]:
        return 0, len(self.events)


async def started(source: NodeOnlySource, cache: AuthorizedEntryCache) -> asyncio.Task[bool]:
    """A refresh that is now reading, held at the source's gate."""
    source.gate.clear()
    reads = source.event_reads
    task = asyncio.create_task(cache.refresh())
    while source.event_reads == reads:
        await asyncio.sleep(0)
    return task


async def test_calls_during_a_refresh_share_one_that_sees_their_writes() -> None:
    source = NodeOnlySource()
    cache = AuthorizedEntryCache(TD, source, ManualClock())
    await cache.rebuild()
    in_flight = await started(source, cache)
    waiting = []
    for n in range(1, 5):
        source.attest(n)  # written after the in-flight refresh began reading
        waiting.append(asyncio.create_task(cache.refresh()))
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(in_flight, *waiting) == [False] + [True] * 4
    assert source.event_reads == 2  # the in-flight refresh and one shared by the other four
    assert all(aliased(cache, n) for n in range(1, 5))


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh() -> None:
    source = NodeOnlySource()
    cache = AuthorizedEntryCache(TD, source, ManualClock())
    await cache.rebuild()
    in_flight = await started(source, cache)
    source.attest(1)
    cancelled = asyncio.create_task(cache.refresh())
    kept = asyncio.create_task(cache.refresh())
    await asyncio.sleep(0)
    cancelled.cancel()
    source.gate.set()
    assert await kept is True
    await in_flight
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert aliased(cache, 1)


async def test_a_failed_shared_refresh_fails_each_caller_and_the_next_call_retries() -> None:
    source = NodeOnlySource()
    cache = AuthorizedEntryCache(TD, source, ManualClock())
    await cache.rebuild()
    in_flight = await started(source, cache)
    source.attest(1)
    waiting = [asyncio.create_task(cache.refresh()) for _ in range(2)]
    await asyncio.sleep(0)
    error = DataStoreError("datastore: read_changes failed: disk I/O error")
    source.fail_read = (source.event_reads + 1, error)  # the shared one, after the in-flight
    source.gate.set()
    assert await in_flight is False
    for task in waiting:
        with pytest.raises(DataStoreError, match="disk I/O"):
            await task
    assert not aliased(cache, 1)
    assert await cache.refresh() is True
    assert aliased(cache, 1)
