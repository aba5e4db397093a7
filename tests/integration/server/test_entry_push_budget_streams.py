"""The server-wide push budget as the Watch handler spends it (server/api/entrynotifier.py over
server/pushbudget.py): streams over the budget are served later, none is dropped, and a change
that reaches a stream while it waits goes out with that same push."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from plastron.clock import ManualClock
from plastron.datastore import DataStore
from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.records import AttestedNode
from plastron.selector import Selector
from plastron.server.api import authz
from plastron.server.api.entrynotifier import EntryNotifierService
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.server.entrywatchers import EntryWatchers
from plastron.server.metrics import REGISTRY
from plastron.server.pushbudget import PushBudget
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.integration.server.test_entry_watchers import entry

TD = TrustDomain("example.org")
AGENTS = [SpiffeId.parse(f"spiffe://example.org/spire/agent/x/{n}") for n in range(3)]
RATE = 2.0  # a slot every 500 ms: the third stream waits about a second
DEADLINE = 30.0


class RecordingStream:
    """A Watch stream's server side: the request, then what the handler sends."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def recv_message(self) -> Any:
        return entrynotifier_pb2.WatchRequest()

    async def send_message(self, message: Any) -> None:
        self.sent.append(int(message.revision))

    async def cancel(self) -> None:
        pass


@pytest.fixture
async def ds(tmp_path: Path) -> AsyncIterator[DataStore]:
    store = await open_datastore(
        SqlConfig(database_type="sqlite3", data_dir=str(tmp_path)), clock=ManualClock()
    )
    try:
        for agent in AGENTS:
            await store.upsert_attested_node_with_selectors(
                AttestedNode(
                    spiffe_id=agent,
                    attestation_type="x",
                    cert_serial="1",
                    cert_not_after=0,
                    selectors=(Selector("x", "all"),),
                )
            )
        yield store
    finally:
        await store.close()


def caller_of(agent: SpiffeId) -> Any:
    leaf = SimpleNamespace(
        not_valid_after_utc=dt.datetime(2100, 1, 1, tzinfo=dt.UTC), serial_number=1
    )
    return SimpleNamespace(agent=SimpleNamespace(spiffe_id=agent), leaf=leaf)


async def watch(service: EntryNotifierService, agent: SpiffeId, stream: RecordingStream) -> None:
    authz._CURRENT.set(caller_of(agent))
    await service.Watch(stream)  # type: ignore[arg-type]


def deferred_total() -> float:
    return REGISTRY.get_sample_value("plastron_server_entry_pushes_deferred_total") or 0.0


async def until(what: str, condition: Any) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"{what}: not within {DEADLINE:g}s")
        await asyncio.sleep(0.02)


async def test_streams_over_the_budget_are_served_later_and_changes_meanwhile_ride_along(
    ds: DataStore,
) -> None:
    cache = AuthorizedEntryCache(TD, ds, ManualClock())
    await cache.rebuild()
    budget = PushBudget(rate=RATE, burst=1)
    watchers = EntryWatchers(cache, min_gap=0.0, budget=budget)
    ctx = SimpleNamespace(entry_watchers=watchers, clock=ManualClock(), datastore=ds)
    service = EntryNotifierService(ctx)  # type: ignore[arg-type]
    deferred_before = deferred_total()
    streams = [RecordingStream() for _ in AGENTS]
    tasks = [
        asyncio.create_task(watch(service, agent, stream))
        for agent, stream in zip(AGENTS, streams, strict=True)
    ]
    try:
        await until("every stream open", lambda: len(watchers) == len(AGENTS))
        # Only the first stream's opening message fit the budget; an alias that reaches every
        # agent now finds the others still waiting for their slots, their flags set.
        await ds.create_entry(entry("/everyone", SpiffeId(TD, "/spire/server"), "x:all"))
        assert await cache.refresh()
        await until("every stream told", lambda: all(s.sent for s in streams))
        await until("the first stream told of the alias", lambda: len(streams[0].sent) == 2)
        await asyncio.sleep(2 * len(AGENTS) / RATE)  # anything still owed would be sent by now
        assert budget.deferred >= 2
        assert deferred_total() - deferred_before == budget.deferred  # the operator's view
        # The waiting streams' one push carried the alias too (its revision or later).
        assert [len(s.sent) for s in streams] == [2, 1, 1]
        assert min(streams[1].sent[0], streams[2].sent[0]) >= streams[0].sent[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
