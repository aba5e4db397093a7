"""Trust bundle rows: one opaque blob per trust domain (the format belongs to the caller)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from plastron.errors import FailedPrecondition, InvalidArgument, NotFound
from plastron.records import DeleteMode
from plastron.server.datastore import entries, events
from plastron.server.datastore.schema import (
    bundles,
    federated_registration_entries,
    registered_entries,
)
from plastron.spiffe.ids import TrustDomain

B = bundles
MAX_BUNDLE = 8 << 20


def check_data(td: TrustDomain, data: bytes) -> None:
    if not isinstance(data, bytes):
        raise InvalidArgument(f"bundle data for {td.name!r} must be bytes")
    if len(data) > MAX_BUNDLE:
        raise InvalidArgument(f"bundle data for {td.name!r} is larger than {MAX_BUNDLE} bytes")


def create(conn: Connection, td: TrustDomain, data: bytes) -> None:
    check_data(td, data)
    conn.execute(insert(B).values(trust_domain=td.name, data=data))


def fetch(conn: Connection, td: TrustDomain, *, lock: bool = False) -> bytes | None:
    q = select(B.c.data).where(B.c.trust_domain == td.name)
    if lock:
        q = q.with_for_update()
    row = conn.execute(q).first()
    return None if row is None else bytes(row[0])


def list_page(
    conn: Connection, after: int, limit: int | None
) -> tuple[list[tuple[TrustDomain, bytes]], list[int]]:
    q = select(B.c.id, B.c.trust_domain, B.c.data).where(B.c.id > after).order_by(B.c.id)
    if limit is not None:
        q = q.limit(limit)
    rows = list(conn.execute(q))
    return [(TrustDomain(r[1]), bytes(r[2])) for r in rows], [int(r[0]) for r in rows]


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(B)).scalar_one())


def put(conn: Connection, td: TrustDomain, data: bytes) -> None:
    """Upsert; the caller retries on a unique violation from a concurrent first insert."""
    check_data(td, data)
    result = conn.execute(update(B).where(B.c.trust_domain == td.name).values(data=data))
    if result.rowcount == 0:
        conn.execute(insert(B).values(trust_domain=td.name, data=data))


def read_modify_write(
    conn: Connection, td: TrustDomain, fn: Callable[[bytes | None], bytes]
) -> bytes:
    """Run ``fn`` on the current blob under a row lock (FOR UPDATE; BEGIN IMMEDIATE on SQLite)."""
    current = fetch(conn, td, lock=True)
    new = fn(current)
    check_data(td, new)
    if current is None:
        conn.execute(insert(B).values(trust_domain=td.name, data=new))
    else:
        conn.execute(update(B).where(B.c.trust_domain == td.name).values(data=new))
    return new


def remove(conn: Connection, td: TrustDomain, mode: DeleteMode, now: int) -> None:
    row = conn.execute(select(B.c.id).where(B.c.trust_domain == td.name).with_for_update()).first()
    if row is None:
        raise NotFound(f"bundle for trust domain {td.name!r} does not exist")
    bundle_id = int(row[0])
    f = federated_registration_entries
    linked = conn.execute(
        select(registered_entries.c.entry_id)
        .join(f, f.c.registered_entry_id == registered_entries.c.id)
        .where(f.c.bundle_id == bundle_id)
    )
    entry_ids = [str(r[0]) for r in linked]
    if entry_ids:
        if mode == "restrict":
            raise FailedPrecondition(
                f"bundle for trust domain {td.name!r} is federated with by {len(entry_ids)} "
                "registration entries (delete mode restrict)"
            )
        if mode == "delete":
            entries.delete_entries(conn, entry_ids, now)
        elif mode == "dissociate":
            _dissociate(conn, bundle_id, entry_ids, now)
        else:
            raise InvalidArgument(
                f"bundle delete mode {mode!r} is not restrict, dissociate or delete"
            )
    conn.execute(sql_delete(B).where(B.c.id == bundle_id))


def _dissociate(conn: Connection, bundle_id: int, entry_ids: list[str], now: int) -> None:
    f = federated_registration_entries
    conn.execute(sql_delete(f).where(f.c.bundle_id == bundle_id))
    # federates_with changed: bump revisions and emit events so caches and agents notice.
    pks = sorted(entries.pks_for_ids(conn, entry_ids).values())
    rev = registered_entries.c.revision_number
    for i in range(0, len(pks), 500):
        chunk = pks[i : i + 500]
        conn.execute(
            update(registered_entries)
            .where(registered_entries.c.id.in_(chunk))
            .values(revision_number=rev + 1)
        )
    events.record_entry_events(conn, entry_ids, now)
