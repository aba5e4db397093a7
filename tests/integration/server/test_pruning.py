"""The server's prune loop on a real server (SQLite, a ManualClock): change events go after 12
hours, a CA journal once all its authorities expired 14 days ago; the server's own journal
and the entries stay, and the entry cache still serves them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from plastron.clock import ManualClock
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.records import CAJournal
from plastron.server.ca.journal import AuthorityStatus, Journal, JwtKeyRecord
from plastron.server.pruning import CA_JOURNAL_RETENTION, EVENT_RETENTION

from .server_harness import Harness, running_server

HOUR = dt.timedelta(hours=1)


def _journal(not_after: dt.datetime) -> bytes:
    key = JwtKeyRecord("A", "kid-old", not_after - HOUR, not_after, AuthorityStatus.OLD, b"k")
    return Journal(jwt_keys=(key,)).to_json()


async def _create_entry(h: Harness) -> None:
    entry = types_entry.Entry(
        spiffe_id={"trust_domain": "example.org", "path": "/web"},  # type: ignore[arg-type]
        parent_id={"trust_domain": "example.org", "path": "/node"},  # type: ignore[arg-type]
        selectors=[{"type": "unix", "value": "uid:1"}],  # type: ignore[list-item]
    )
    resp = await h.entry_stub(h.local()).BatchCreateEntry(
        entry_pb2.BatchCreateEntryRequest(entries=[entry])
    )
    assert resp.results[0].status.code == 0, resp.results[0].status


async def test_prune_drops_old_events_and_dead_journals_only(tmp_path: Path) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with running_server(tmp_path, clock=clock) as h:
        ds = h.server.datastore
        assert ds is not None
        now = clock.now()
        own = await ds.list_ca_journals()  # type: ignore[attr-defined]
        assert len(own) == 1
        dead = await ds.set_ca_journal(CAJournal(0, _journal(now - 2 * HOUR), "dead"))
        await _create_entry(h)
        assert await ds.list_entry_events(0, 100)

        clock.advance(EVENT_RETENTION - HOUR)
        first = await h.server.prune()
        assert (first.events, first.ca_journals) == (0, 0)  # 11 h old; expired 13 h ago
        assert await ds.list_entry_events(0, 100)

        clock.advance(2 * HOUR)
        second = await h.server.prune()
        assert second.events >= 1 and second.ca_journals == 0
        assert await ds.list_entry_events(0, 100) == []
        assert await ds.list_node_events(0, 100) == []

        clock.advance(CA_JOURNAL_RETENTION)
        third = await h.server.prune()
        assert third.ca_journals == 1
        journals = await ds.list_ca_journals()  # type: ignore[attr-defined]
        assert [j.id for j in journals] == [own[0].id] and dead.id != own[0].id

        listed = await h.entry_stub(h.local()).ListEntries(entry_pb2.ListEntriesRequest())
        assert [e.spiffe_id.path for e in listed.entries] == ["/web"]


def test_a_journal_is_dead_only_when_it_records_authorities_all_expired() -> None:
    from plastron.server.ca.journal import all_expired_before  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    assert all_expired_before(_journal(now - HOUR), now)
    assert not all_expired_before(_journal(now + HOUR), now)
    assert not all_expired_before(Journal().to_json(), now)  # nothing activated yet
    assert not all_expired_before(b"not a journal", now)  # kept; the CA reports it on load
