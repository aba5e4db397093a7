"""Change events: one row per entry / node write, in the writer's transaction.

Servers sharing a database replay them to keep their authorized-entry caches current.
"""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection

from plastron.server.datastore.schema import attested_node_entries_events as node_events
from plastron.server.datastore.schema import registered_entries_events as entry_events

MAX_EVENT_BATCH = 100_000

# Built once: every attestation and cache refresh runs these, and building and keying a
# statement per call costs SQLAlchemy more than SQLite takes to run it.
_INSERT_ENTRY_EVENT = insert(entry_events)
_INSERT_NODE_EVENT = insert(node_events)
_ENTRY_EVENTS_AFTER = (
    select(entry_events.c.id, entry_events.c.entry_id)
    .where(entry_events.c.id > bindparam("after_id"))
    .order_by(entry_events.c.id)
    .limit(bindparam("limit"))
)
_NODE_EVENTS_AFTER = (
    select(node_events.c.id, node_events.c.spiffe_id)
    .where(node_events.c.id > bindparam("after_id"))
    .order_by(node_events.c.id)
    .limit(bindparam("limit"))
)


def record_entry_event(conn: Connection, entry_id: str, now: int) -> None:
    conn.execute(_INSERT_ENTRY_EVENT, {"entry_id": entry_id, "created_at": now})


def record_entry_events(conn: Connection, entry_ids: list[str], now: int) -> None:
    if entry_ids:
        conn.execute(_INSERT_ENTRY_EVENT, [{"entry_id": e, "created_at": now} for e in entry_ids])


def record_node_event(conn: Connection, spiffe_id: str, now: int) -> None:
    conn.execute(_INSERT_NODE_EVENT, {"spiffe_id": spiffe_id, "created_at": now})


def list_entry_events(conn: Connection, after_id: int, limit: int) -> list[tuple[int, str]]:
    rows = conn.execute(_ENTRY_EVENTS_AFTER, {"after_id": after_id, "limit": limit})
    return [(int(r[0]), str(r[1])) for r in rows]


def list_node_events(conn: Connection, after_id: int, limit: int) -> list[tuple[int, str]]:
    rows = conn.execute(_NODE_EVENTS_AFTER, {"after_id": after_id, "limit": limit})
    return [(int(r[0]), str(r[1])) for r in rows]


def latest_event_ids(conn: Connection) -> tuple[int, int]:
    entry_max = conn.execute(select(func.max(entry_events.c.id))).scalar()
    node_max = conn.execute(select(func.max(node_events.c.id))).scalar()
    return int(entry_max or 0), int(node_max or 0)


def prune_events(conn: Connection, older_than: int) -> int:
    a = conn.execute(delete(entry_events).where(entry_events.c.created_at < older_than))
    b = conn.execute(delete(node_events).where(node_events.c.created_at < older_than))
    return int(a.rowcount) + int(b.rowcount)
