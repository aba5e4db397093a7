"""read_changes: the entry cache's catch-up read (events after two cursors and the current
rows they name, in one read)."""

from __future__ import annotations

import pytest
from datastore_builders import entry, node, sel, sid

from plastron.errors import InvalidArgument
from plastron.server.datastore.store import SqlDataStore


async def test_events_come_with_the_current_rows_they_name(ds: SqlDataStore) -> None:
    kept = await ds.create_entry(entry("/kept", "t:1"))
    gone = await ds.create_entry(entry("/gone", "t:1"))
    await ds.delete_entry(gone.entry_id)
    with_sels = await ds.create_attested_node(node("a", "k:2", "k:1"))
    emptied = await ds.create_attested_node(node("b", "k:3"))
    await ds.set_node_selectors(emptied.spiffe_id, [])

    batch = await ds.read_changes(0, 0, 100)
    assert batch.entry_events == await ds.list_entry_events(0, 100)
    assert batch.node_events == await ds.list_node_events(0, 100)
    assert batch.entries == {kept.entry_id: kept}  # the deleted entry is absent
    assert batch.node_selectors == {str(with_sels.spiffe_id): (sel("k:2"), sel("k:1"))}


async def test_cursors_and_limit_apply_to_each_kind(ds: SqlDataStore) -> None:
    first = await ds.create_entry(entry("/one", "t:1"))
    second = await ds.create_entry(entry("/two", "t:1"))
    await ds.set_node_selectors(sid("/spire/agent/x/1"), [sel("k:1")])
    await ds.set_node_selectors(sid("/spire/agent/x/2"), [sel("k:2")])
    entry_events = await ds.list_entry_events(0, 100)
    node_events = await ds.list_node_events(0, 100)

    batch = await ds.read_changes(entry_events[0][0], node_events[-1][0], 1)
    assert batch.entry_events == entry_events[1:2] and list(batch.entries) == [second.entry_id]
    assert batch.node_events == [] and batch.node_selectors == {}
    assert first.entry_id not in batch.entries
    assert (await ds.read_changes(0, 0, 1)).node_events == node_events[:1]


async def test_bad_cursors_are_refused(ds: SqlDataStore) -> None:
    with pytest.raises(InvalidArgument, match="after_id"):
        await ds.read_changes(-1, 0, 10)
    with pytest.raises(InvalidArgument, match="limit"):
        await ds.read_changes(0, 0, 0)
