"""Join tokens, CA journal, federation relationships, events pruning, health."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from datastore_builders import entry, sid

from plastron.clock import ManualClock
from plastron.errors import AlreadyExists, InvalidArgument, NotFound
from plastron.records import CAJournal, FederationRelationship, JoinToken
from plastron.server.datastore.store import SqlDataStore
from plastron.spiffe.ids import TrustDomain


async def test_join_token_lifecycle(ds: SqlDataStore) -> None:
    await ds.create_join_token(JoinToken("tok-1", 100))
    with pytest.raises(AlreadyExists) as caught:
        await ds.create_join_token(JoinToken("tok-1", 200))
    assert "tok-1" not in str(caught.value)  # a token is a secret: never echoed
    assert await ds.fetch_join_token("tok-1") == JoinToken("tok-1", 100)
    assert await ds.fetch_join_token("TOK-1") is None  # case-sensitive on every backend
    assert await ds.consume_join_token("TOK-1") is None
    assert await ds.consume_join_token("tok-1") == JoinToken("tok-1", 100)
    assert await ds.consume_join_token("tok-1") is None
    assert "tok-1" not in repr(JoinToken("tok-1", 1))


async def test_join_token_rejects_bad_shapes(ds: SqlDataStore) -> None:
    with pytest.raises(InvalidArgument, match=r"1\.\.255"):
        await ds.create_join_token(JoinToken("t" * 256, 1))
    with pytest.raises(InvalidArgument, match="ASCII"):
        await ds.consume_join_token("tök")
    with pytest.raises(InvalidArgument, match=r"1\.\.255"):
        await ds.fetch_join_token("")


async def test_concurrent_consume_exactly_one_wins(ds: SqlDataStore) -> None:
    for round_ in range(5):
        await ds.create_join_token(JoinToken(f"race-{round_}", 100))
        results = await asyncio.gather(*(ds.consume_join_token(f"race-{round_}") for _ in range(2)))
        assert sorted(r is None for r in results) == [False, True]


async def test_prune_join_tokens(ds: SqlDataStore) -> None:
    await ds.create_join_token(JoinToken("old", 10))
    await ds.create_join_token(JoinToken("new", 30))
    assert await ds.prune_join_tokens(20) == 1
    assert await ds.fetch_join_token("old") is None
    assert await ds.fetch_join_token("new") is not None


async def test_ca_journal(ds: SqlDataStore) -> None:
    first = await ds.set_ca_journal(CAJournal(0, b"j1", "auth-a"))
    assert first.id > 0
    second = await ds.set_ca_journal(CAJournal(0, b"j2", "auth-b"))
    updated = await ds.set_ca_journal(CAJournal(first.id, b"j1'", "auth-c"))
    assert await ds.fetch_ca_journal("auth-c") == updated
    assert await ds.fetch_ca_journal("auth-a") is None
    assert await ds.fetch_ca_journal("") is None
    assert await ds.list_ca_journals() == [updated, second]
    with pytest.raises(NotFound):
        await ds.set_ca_journal(CAJournal(first.id + 1000, b"x", "auth-x"))
    assert await ds.prune_ca_journals(lambda j: j.data == b"j2") == 1
    assert await ds.list_ca_journals() == [updated]


async def test_federation_relationships(ds: SqlDataStore) -> None:
    web = FederationRelationship(TrustDomain("web.org"), "https://web.org/bundle", "https_web")
    spiffe = FederationRelationship(
        TrustDomain("sp.org"), "https://sp.org/b", "https_spiffe", sid("/spire/server")
    )
    assert await ds.create_federation_relationship(web) == web
    await ds.create_federation_relationship(spiffe)
    with pytest.raises(AlreadyExists):
        await ds.create_federation_relationship(web)
    assert await ds.fetch_federation_relationship(TrustDomain("sp.org")) == spiffe
    page, token = await ds.list_federation_relationships(page_size=1)
    assert page == [web] and token
    assert (await ds.list_federation_relationships(page_size=1, page_token=token))[0] == [spiffe]
    moved = FederationRelationship(TrustDomain("web.org"), "https://new.web.org/b", "https_web")
    assert await ds.update_federation_relationship(moved) == moved
    assert await ds.fetch_federation_relationship(TrustDomain("web.org")) == moved
    await ds.delete_federation_relationship(TrustDomain("web.org"))
    assert await ds.fetch_federation_relationship(TrustDomain("web.org")) is None
    with pytest.raises(NotFound):
        await ds.delete_federation_relationship(TrustDomain("web.org"))
    with pytest.raises(InvalidArgument, match="endpoint_spiffe_id"):
        await ds.create_federation_relationship(
            FederationRelationship(TrustDomain("x.org"), "https://x.org", "https_spiffe")
        )
    with pytest.raises(InvalidArgument, match="https"):
        await ds.create_federation_relationship(
            FederationRelationship(TrustDomain("x.org"), "http://x.org", "https_web")
        )


async def test_prune_events(ds: SqlDataStore, clock: ManualClock) -> None:
    await ds.create_entry(entry("/a", "t:1"))
    await ds.set_node_selectors(sid("/spire/agent/x/1"), [])
    clock.advance(dt.timedelta(hours=1))
    late = await ds.create_entry(entry("/b", "t:1"))
    cutoff = int(clock.now().timestamp())
    assert await ds.prune_events(cutoff) == 2
    assert [e for _, e in await ds.list_entry_events(0, 10)] == [late.entry_id]
    assert await ds.list_node_events(0, 10) == []
    # Ids are never reused after pruning: a cursor at the old maximum still sees new events.
    latest_entry, _ = await ds.latest_event_ids()
    await ds.create_entry(entry("/c", "t:1"))
    assert len(await ds.list_entry_events(latest_entry, 10)) == 1


async def test_health_check(ds: SqlDataStore) -> None:
    await ds.health_check()
