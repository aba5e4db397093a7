"""CA journal rows: the CA's opaque journal blob, found by its active X.509 authority id."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from plastron.errors import DataStoreError, InvalidArgument, NotFound
from plastron.records import CAJournal
from plastron.server.datastore.schema import MAX_SHORT, ca_journals

J = ca_journals
MAX_JOURNAL = 8 << 20


def _check(journal: CAJournal) -> None:
    if len(journal.data) > MAX_JOURNAL:
        raise InvalidArgument(f"CA journal data is larger than {MAX_JOURNAL} bytes")
    aid = journal.active_x509_authority_id
    if len(aid) > MAX_SHORT or not aid.isascii():
        raise InvalidArgument(
            f"active_x509_authority_id must be ASCII of at most {MAX_SHORT} chars"
        )
    if journal.id < 0:
        raise InvalidArgument(f"CA journal id {journal.id} is negative")


def put(conn: Connection, journal: CAJournal) -> CAJournal:
    _check(journal)
    values = {"data": journal.data, "active_x509_authority_id": journal.active_x509_authority_id}
    if journal.id == 0:
        inserted = conn.execute(insert(J).values(**values)).inserted_primary_key
        if inserted is None:
            raise DataStoreError("datastore: the database returned no id for the new CA journal")
        return CAJournal(int(inserted[0]), journal.data, journal.active_x509_authority_id)
    if conn.execute(update(J).where(J.c.id == journal.id).values(**values)).rowcount == 0:
        raise NotFound(f"CA journal {journal.id} does not exist")
    return journal


def fetch(conn: Connection, active_x509_authority_id: str) -> CAJournal | None:
    if not active_x509_authority_id:
        return None
    q = (
        select(J)
        .where(J.c.active_x509_authority_id == active_x509_authority_id)
        .order_by(J.c.id.desc())
        .limit(1)
    )
    row = conn.execute(q).first()
    return (
        None
        if row is None
        else CAJournal(int(row.id), bytes(row.data), row.active_x509_authority_id)
    )


def list_all(conn: Connection) -> list[CAJournal]:
    rows = conn.execute(select(J).order_by(J.c.id))
    return [CAJournal(int(r.id), bytes(r.data), r.active_x509_authority_id) for r in rows]


def prune(conn: Connection, should_delete: Callable[[CAJournal], bool]) -> int:
    doomed = [j.id for j in list_all(conn) if should_delete(j)]
    if doomed:
        conn.execute(delete(J).where(J.c.id.in_(doomed)))
    return len(doomed)
