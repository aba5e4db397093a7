"""The server API when its DataStore fails, on a server built with DataStore
"fault_injecting" (tests/datastore_faults.py: the real sql store on SQLite, with failures on
demand): the caller gets a clean gRPC status, nothing is half-written, and the server goes on
serving once the store answers again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.errors import Unavailable
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from tests.datastore_faults import NAME, FaultInjectingDataStore, registries_with_faults

from .server_harness import Harness, running_server
from .test_api import count_entries, create, entry

# the statement ListEntries pages with, and the insert of one registration entry row
LIST_ENTRY_PAGE = r"^SELECT registered_entries\.id\s+FROM registered_entries\s+WHERE"
INSERT_ENTRY = r"^INSERT INTO registered_entries \("


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_server(tmp_path, registries=registries_with_faults(), datastore=NAME) as h:
        yield h


def faults(h: Harness) -> FaultInjectingDataStore:
    store = h.server.datastore
    assert isinstance(store, FaultInjectingDataStore)  # the server built it from its config
    return store


async def list_spiffe_paths(h: Harness) -> set[str]:
    resp = await h.entry_stub(h.local()).ListEntries(entry_pb2.ListEntriesRequest())
    return {e.spiffe_id.path for e in resp.entries}


async def test_list_entries_during_a_store_failure_is_internal_with_a_clean_message(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await create(harness, entry("/a", "/node", "unix:uid:1"), entry("/b", "/node", "unix:uid:2"))
    faults(harness).fail_statement(LIST_ENTRY_PAGE)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GRPCError) as info:
        await harness.entry_stub(harness.local()).ListEntries(entry_pb2.ListEntriesRequest())
    assert info.value.status is Status.INTERNAL
    assert info.value.message == "datastore: list_entries failed: OperationalError: disk I/O error"
    assert not [r for r in caplog.records if r.exc_info]  # an expected failure: no traceback
    assert faults(harness).pending_faults() == 0
    assert await list_spiffe_paths(harness) == {"/a", "/b"}  # served again


async def test_a_batch_create_failing_midway_writes_nothing(harness: Harness) -> None:
    store = faults(harness)
    before = (await count_entries(harness), await store.latest_event_ids())
    batch = [entry(f"/batch/{i}", "/node", f"unix:uid:{i}") for i in range(3)]
    store.fail_statement(INSERT_ENTRY, after=1)  # the first row is in, the second fails
    with pytest.raises(GRPCError) as info:
        await create(harness, *batch)
    assert info.value.status is Status.INTERNAL
    assert info.value.message == (
        "datastore: create_entries failed: OperationalError: disk I/O error"
    )
    assert store.pending_faults() == 0
    assert (await count_entries(harness), await store.latest_event_ids()) == before
    assert not {p for p in await list_spiffe_paths(harness) if p.startswith("/batch/")}
    # nothing of the failed batch is in the way of sending it again
    results = await create(harness, *batch)
    assert [r.status.code for r in results] == [Status.OK.value] * 3
    assert await count_entries(harness) == before[0] + 3


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        # a store that reports an outage as such: the caller may retry
        (Unavailable("datastore: connection refused"), Status.UNAVAILABLE, None),
        # a store plugin's own bug: INTERNAL, none of its details, a traceback in the log
        (KeyError("/var/lib/secret"), Status.INTERNAL, "internal error"),
    ],
)
async def test_errors_a_store_raises_map_to_their_status(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: Status,
    message: str | None,
) -> None:
    faults(harness).fail_next("count_entries", error)
    with pytest.raises(GRPCError) as info:
        await count_entries(harness)
    assert info.value.status is status
    assert info.value.message == (message or str(error))
    logged_bug = any(r.exc_info and r.exc_info[1] is error for r in caplog.records)
    assert logged_bug is (status is Status.INTERNAL)
    assert await count_entries(harness) == 0
