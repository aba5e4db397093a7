"""The entry cache's catch-up read: events after two cursors and the current state they name,
in one read transaction (one round trip per refresh instead of one per kind of row)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from plastron.datastore import ChangeBatch
from plastron.server.datastore import entries, events, nodes


def read_changes(conn: Connection, entry_after: int, node_after: int, limit: int) -> ChangeBatch:
    entry_events = events.list_entry_events(conn, entry_after, limit)
    node_events = events.list_node_events(conn, node_after, limit)
    named_entries = sorted({entry_id for _, entry_id in entry_events})
    named_nodes = sorted({spiffe_id for _, spiffe_id in node_events})
    return ChangeBatch(
        entry_events=entry_events,
        entries=entries.fetch_entries(conn, named_entries) if named_entries else {},
        node_events=node_events,
        node_selectors=nodes.selectors_of(conn, named_nodes) if named_nodes else {},
    )
