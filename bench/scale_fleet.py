"""The fleet `bench/scale.py` measures, and filling a datastore with it by bulk inserts.

At N entries: N/10 attested agents (join_token IDs ``node-<i>``), each with two node selectors
(its group's and its own); N/100 node-alias entries (parent: the server), alias ``g`` matching
the ten agents of group ``g``; N/20 entries parented to agent 0 directly (a parent with
thousands of children); the rest spread over the aliases, so an ordinary agent is authorized
for about 100 entries.

The rows go in through SQLAlchemy Core ``executemany`` on the datastore's own engine (one
statement per table per chunk), not through ``create_entries``: the datastore API writes an
event and checks similar entries per entry, which at 100,000 entries took minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore import nodes
from plastron.server.datastore.entries import entry_hash
from plastron.server.datastore.schema import (
    attested_node_entries,
    node_resolver_map_entries,
    registered_entries,
    selectors,
)
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id

TD = TrustDomain("example.org")
CHUNK = 5000
AGENT_CERT_NOT_AFTER = 2**31


def agent_id(i: int) -> SpiffeId:
    return SpiffeId(TD, f"/spire/agent/join_token/node-{i}")


def agent_count(n: int) -> int:
    return n // 10


def alias_count(n: int) -> int:
    return n // 100


def node_selectors(n: int, i: int) -> tuple[Selector, ...]:
    return (Selector("x", f"group:{i % alias_count(n)}"), Selector("x", f"node:{i}"))


def _entry(path: str, parent: SpiffeId, selector: Selector) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id=f"e{path.replace('/', '-')}",
        spiffe_id=SpiffeId(TD, path),
        parent_id=parent,
        selectors=(selector,),
        x509_svid_ttl=3600,
    )


def fleet_entries(n: int) -> Iterator[RegistrationEntry]:
    aliases, big = alias_count(n), n // 20
    for g in range(aliases):
        yield _entry(f"/alias/{g}", server_id(TD), Selector("x", f"group:{g}"))
    for i in range(big):
        yield _entry(f"/big/{i}", agent_id(0), Selector("unix", f"uid:{i}"))
    for i in range(n - aliases - big):
        alias = SpiffeId(TD, f"/alias/{i % aliases}")
        yield _entry(f"/w/{i}", alias, Selector("unix", f"uid:{i}"))


def _chunks(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _entry_row(e: RegistrationEntry, now: int) -> dict[str, Any]:
    return {
        "entry_id": e.entry_id,
        "spiffe_id": str(e.spiffe_id),
        "parent_id": str(e.parent_id),
        "entry_hash": entry_hash(e.spiffe_id, e.parent_id, e.selectors),
        "ttl": e.x509_svid_ttl,
        "jwt_svid_ttl": 0,
        "admin": False,
        "downstream": False,
        "expiry": 0,
        "revision_number": 0,
        "store_svid": False,
        "hint": "",
        "created_at": now,
    }


def _insert_entries(conn: Connection, chunk: Sequence[RegistrationEntry], now: int) -> None:
    conn.execute(insert(registered_entries), [_entry_row(e, now) for e in chunk])
    ids = [e.entry_id for e in chunk]
    E = registered_entries
    found = conn.execute(select(E.c.entry_id, E.c.id).where(E.c.entry_id.in_(ids)))
    pks: dict[str, int] = {str(eid): int(pk) for eid, pk in found}
    rows = [
        {"registered_entry_id": pks[e.entry_id], "type": s.type, "value": s.value}
        for e in chunk
        for s in e.selectors
    ]
    conn.execute(insert(selectors), rows)


def _node_row(i: int) -> dict[str, Any]:
    return {
        "spiffe_id": str(agent_id(i)),
        "data_type": "join_token",
        "serial_number": str(i + 1),
        "expires_at": AGENT_CERT_NOT_AFTER,
        "new_serial_number": "",
        "new_expires_at": 0,
        "can_reattest": False,
        "agent_version": "",
        "node_data": b"",
    }


def _insert_nodes(conn: Connection, n: int, chunk: Sequence[int]) -> None:
    conn.execute(insert(attested_node_entries), [_node_row(i) for i in chunk])
    rows = [
        {"spiffe_id": str(agent_id(i)), "type": s.type, "value": s.value}
        for i in chunk
        for s in node_selectors(n, i)
    ]
    conn.execute(insert(node_resolver_map_entries), rows)


def bulk_populate(engine: Engine, n: int, *, leave_out_agents: int = 0) -> float:
    """Fill an empty, migrated datastore with the fleet at ``n`` entries; agents below
    ``leave_out_agents`` are not attested (the benchmark attests them through the API).
    Returns the seconds it took."""
    started = time.perf_counter()
    now = int(time.time())
    for chunk in _chunks(fleet_entries(n)):
        with engine.begin() as conn:
            _insert_entries(conn, chunk, now)
    for chunk in _chunks(range(leave_out_agents, agent_count(n))):
        with engine.begin() as conn:
            _insert_nodes(conn, n, chunk)
    return time.perf_counter() - started


def bulk_node_selectors(engine: Engine, n: int, agents: Iterable[int]) -> None:
    """Give the fleet agents ``agents`` (attested through the API, which leaves a join-token
    agent without selectors) their node selectors, with the node events a server applies at
    its next poll; one transaction per chunk instead of one per agent."""
    now = int(time.time())
    for chunk in _chunks(agents, 500):
        with engine.begin() as conn:
            for i in chunk:
                nodes.set_selectors(conn, agent_id(i), node_selectors(n, i), now)
