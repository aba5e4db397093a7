"""Attested node and node-selector queries (synchronous, inside the caller's transaction)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from plastron.datastore import NodeFilters, NodeUpdate
from plastron.errors import InvalidArgument, NotFound
from plastron.records import AttestedNode
from plastron.selector import Selector
from plastron.server.datastore import events
from plastron.server.datastore.filters import check_match, selector_predicate, set_match
from plastron.server.datastore.schema import (
    MAX_SHORT,
    attested_node_entries,
    node_resolver_map_entries,
)
from plastron.spiffe.ids import SpiffeId

N = attested_node_entries
NS = node_resolver_map_entries
MAX_NODE_DATA = 1 << 20
MAX_NODE_SELECTORS = 1_000
MAX_TIMESTAMP = 2**62
ID_CHUNK = 500  # IDs per IN (...) list
UPDATABLE = frozenset(f.name for f in dataclasses.fields(AttestedNode)) - {"spiffe_id"}

# Built once (as events.py): an attestation runs each of these, and building and keying a
# statement per call costs SQLAlchemy more than SQLite takes to run it.
_NODE = select(N).where(N.c.spiffe_id == bindparam("sid"))
_NODE_LOCKED = _NODE.with_for_update()
_INSERT_NODE = insert(N)
_UPDATE_NODE_ROW = update(N).where(N.c.id == bindparam("row_id"))
_SELECTORS = (
    select(NS.c.type, NS.c.value).where(NS.c.spiffe_id == bindparam("sid")).order_by(NS.c.id)
)
_SELECTORS_OF = (
    select(NS.c.spiffe_id, NS.c.type, NS.c.value)
    .where(NS.c.spiffe_id.in_(bindparam("sids", expanding=True)))
    .order_by(NS.c.id)
)


def validate_node(node: AttestedNode) -> None:
    if not isinstance(node.spiffe_id, SpiffeId):
        raise InvalidArgument("attested node spiffe_id must be a SpiffeId")
    for name in ("attestation_type", "cert_serial", "new_cert_serial", "agent_version"):
        if len(getattr(node, name)) > MAX_SHORT:
            raise InvalidArgument(f"attested node {name} is longer than {MAX_SHORT} characters")
    for name in ("cert_serial", "new_cert_serial"):
        if not getattr(node, name).isascii():
            raise InvalidArgument(f"attested node {name} must be ASCII")
    for name in ("cert_not_after", "new_cert_not_after"):
        if not 0 <= getattr(node, name) <= MAX_TIMESTAMP:
            raise InvalidArgument(f"attested node {name} {getattr(node, name)} is out of range")
    if len(node.node_data) > MAX_NODE_DATA:
        raise InvalidArgument(f"attested node node_data is larger than {MAX_NODE_DATA} bytes")
    check_selectors(node.selectors)


def check_selectors(sels: Sequence[Selector]) -> None:
    if len(sels) > MAX_NODE_SELECTORS:
        raise InvalidArgument(f"node has more than {MAX_NODE_SELECTORS} selectors")


def _values(node: AttestedNode) -> dict[str, Any]:
    return {
        "spiffe_id": str(node.spiffe_id),
        "data_type": node.attestation_type,
        "serial_number": node.cert_serial,
        "expires_at": node.cert_not_after,
        "new_serial_number": node.new_cert_serial,
        "new_expires_at": node.new_cert_not_after,
        "can_reattest": node.can_reattest,
        "agent_version": node.agent_version,
        "node_data": node.node_data,
    }


def _from_row(row: Any, sels: Sequence[Selector]) -> AttestedNode:
    return AttestedNode(
        spiffe_id=SpiffeId.parse(row.spiffe_id),
        attestation_type=row.data_type,
        cert_serial=row.serial_number,
        cert_not_after=int(row.expires_at),
        new_cert_serial=row.new_serial_number,
        new_cert_not_after=int(row.new_expires_at),
        can_reattest=bool(row.can_reattest),
        agent_version=row.agent_version,
        node_data=bytes(row.node_data),
        selectors=tuple(sels),
    )


def replace_selectors(conn: Connection, sid: str, sels: Sequence[Selector]) -> None:
    check_selectors(sels)
    conn.execute(delete(NS).where(NS.c.spiffe_id == sid))
    unique = list(dict.fromkeys(sels))
    if unique:
        conn.execute(
            insert(NS), [{"spiffe_id": sid, "type": s.type, "value": s.value} for s in unique]
        )


def get_selectors(conn: Connection, sid: str) -> tuple[Selector, ...]:
    return tuple(Selector(t, v) for t, v in conn.execute(_SELECTORS, {"sid": sid}))


def selectors_of(conn: Connection, sids: Sequence[str]) -> dict[str, tuple[Selector, ...]]:
    """The selectors of each node named that has any (in insertion order, as get_selectors)."""
    grouped: dict[str, list[Selector]] = defaultdict(list)
    for i in range(0, len(sids), ID_CHUNK):
        for sid, typ, val in conn.execute(_SELECTORS_OF, {"sids": list(sids[i : i + ID_CHUNK])}):
            grouped[sid].append(Selector(typ, val))
    return {sid: tuple(sels) for sid, sels in grouped.items()}


def all_selectors(conn: Connection) -> dict[SpiffeId, tuple[Selector, ...]]:
    grouped: dict[str, list[Selector]] = defaultdict(list)
    for sid, typ, val in conn.execute(
        select(NS.c.spiffe_id, NS.c.type, NS.c.value).order_by(NS.c.id)
    ):
        grouped[sid].append(Selector(typ, val))
    return {SpiffeId.parse(k): tuple(v) for k, v in grouped.items()}


def create(conn: Connection, node: AttestedNode, now: int) -> AttestedNode:
    validate_node(node)
    sid = str(node.spiffe_id)
    conn.execute(insert(N).values(**_values(node)))
    replace_selectors(conn, sid, node.selectors)
    events.record_node_event(conn, sid, now)
    return dataclasses.replace(node, selectors=tuple(dict.fromkeys(node.selectors)))


def fetch(conn: Connection, spiffe_id: SpiffeId, *, lock: bool = False) -> AttestedNode | None:
    sid = str(spiffe_id)
    row = conn.execute(_NODE_LOCKED if lock else _NODE, {"sid": sid}).first()
    return None if row is None else _from_row(row, get_selectors(conn, sid))


def update_fields(
    conn: Connection, spiffe_id: SpiffeId, fields: NodeUpdate, now: int
) -> AttestedNode:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise InvalidArgument(f"attested node fields cannot be updated: {sorted(unknown)}")
    current = fetch(conn, spiffe_id, lock=True)
    if current is None:
        raise NotFound(f"attested node {str(spiffe_id)!r} does not exist")
    updated = dataclasses.replace(current, **fields)
    validate_node(updated)
    sid = str(spiffe_id)
    conn.execute(update(N).where(N.c.spiffe_id == sid).values(**_values(updated)))
    if "selectors" in fields:
        replace_selectors(conn, sid, updated.selectors)
    events.record_node_event(conn, sid, now)
    return dataclasses.replace(updated, selectors=tuple(dict.fromkeys(updated.selectors)))


def upsert_with_selectors(conn: Connection, node: AttestedNode, now: int) -> AttestedNode:
    """Create or replace the node row and its selectors (attestation and re-attestation)."""
    validate_node(node)
    sid = str(node.spiffe_id)
    exists = conn.execute(select(N.c.id).where(N.c.spiffe_id == sid).with_for_update()).first()
    if exists is None:
        conn.execute(insert(N).values(**_values(node)))
    else:
        conn.execute(update(N).where(N.c.id == exists[0]).values(**_values(node)))
    replace_selectors(conn, sid, node.selectors)
    events.record_node_event(conn, sid, now)
    return dataclasses.replace(node, selectors=tuple(dict.fromkeys(node.selectors)))


def admit(
    conn: Connection,
    spiffe_id: SpiffeId,
    build: Callable[[AttestedNode | None], AttestedNode],
    now: int,
) -> AttestedNode:
    """Attestation's read-decide-write: the current node (row locked), ``build``'s verdict on
    it, then its insert or update with its selectors, all in the caller's transaction."""
    sid = str(spiffe_id)
    row = conn.execute(_NODE_LOCKED, {"sid": sid}).first()
    current = None if row is None else _from_row(row, get_selectors(conn, sid))
    node = build(current)
    if node.spiffe_id != spiffe_id:
        raise InvalidArgument(f"attested node {str(node.spiffe_id)!r} is not {sid!r}")
    validate_node(node)
    if row is None:
        conn.execute(_INSERT_NODE, _values(node))
    else:
        conn.execute(_UPDATE_NODE_ROW, {"row_id": row.id, **_values(node)})
    selectors = tuple(dict.fromkeys(node.selectors))
    if current is None or current.selectors != selectors:
        # a re-attestation usually reports the same selectors: rows already as they should be
        replace_selectors(conn, sid, selectors)
    events.record_node_event(conn, sid, now)
    return dataclasses.replace(node, selectors=selectors)


def remove(conn: Connection, spiffe_id: SpiffeId, now: int) -> AttestedNode:
    current = fetch(conn, spiffe_id, lock=True)
    if current is None:
        raise NotFound(f"attested node {str(spiffe_id)!r} does not exist")
    sid = str(spiffe_id)
    conn.execute(delete(NS).where(NS.c.spiffe_id == sid))
    conn.execute(delete(N).where(N.c.spiffe_id == sid))
    events.record_node_event(conn, sid, now)
    return current


def prune(conn: Connection, expires_before: int, types: Sequence[str], now: int) -> int:
    if not types:
        return 0
    q = select(N.c.spiffe_id).where(
        N.c.data_type.in_(list(types)), N.c.expires_at < expires_before, N.c.serial_number != ""
    )
    return _delete_nodes(conn, [str(r[0]) for r in conn.execute(q)], now)


def prune_expired(
    conn: Connection, expires_before: int, include_non_reattestable: bool, limit: int, now: int
) -> int:
    """SPIRE's ``prune_attested_nodes_expired_for``: at most ``limit`` nodes whose SVID expired
    before ``expires_before``; never banned ones (deleting the row would lift the ban), and
    nodes that cannot re-attest only when asked (``prune_tofu_nodes``)."""
    where = [N.c.expires_at < expires_before, N.c.serial_number != ""]
    if not include_non_reattestable:
        where.append(N.c.can_reattest == True)  # noqa: E712 - an SQL expression
    q = select(N.c.spiffe_id).where(*where).order_by(N.c.expires_at).limit(limit)
    return _delete_nodes(conn, [str(r[0]) for r in conn.execute(q)], now)


def _delete_nodes(conn: Connection, sids: Sequence[str], now: int) -> int:
    """Delete the nodes and their selectors, with one change event each."""
    for i in range(0, len(sids), ID_CHUNK):
        chunk = sids[i : i + ID_CHUNK]
        conn.execute(delete(NS).where(NS.c.spiffe_id.in_(chunk)))
        conn.execute(delete(N).where(N.c.spiffe_id.in_(chunk)))
        for sid in chunk:
            events.record_node_event(conn, sid, now)
    return len(sids)


def set_selectors(
    conn: Connection, spiffe_id: SpiffeId, sels: Sequence[Selector], now: int
) -> None:
    sid = str(spiffe_id)
    replace_selectors(conn, sid, sels)
    events.record_node_event(conn, sid, now)


def node_filter(**filters: Unpack[NodeFilters]) -> list[Any]:
    where: list[Any] = []
    if (by_attestation_type := filters.get("by_attestation_type")) is not None:
        where.append(N.c.data_type == by_attestation_type)
    if (by_banned := filters.get("by_banned")) is not None:
        where.append(N.c.serial_number == "" if by_banned else N.c.serial_number != "")
    if (by_can_reattest := filters.get("by_can_reattest")) is not None:
        where.append(N.c.can_reattest == by_can_reattest)
    if (by_expires_before := filters.get("by_expires_before")) is not None:
        where.append(N.c.expires_at < by_expires_before)
    if (by_selectors := filters.get("by_selectors")) is not None:
        sels, match = by_selectors
        check_match("by_selectors", sels, match)
        pred = selector_predicate(NS.c.type, NS.c.value, sels)
        where.append(N.c.spiffe_id.in_(set_match(NS, NS.c.spiffe_id, pred, len(set(sels)), match)))
    return where


def list_page(
    conn: Connection, where: list[Any], after: int, limit: int | None
) -> tuple[list[AttestedNode], list[int]]:
    q = select(N).where(*where, N.c.id > after).order_by(N.c.id)
    if limit is not None:
        q = q.limit(limit)
    rows = list(conn.execute(q))
    sels: dict[str, list[Selector]] = defaultdict(list)
    sids = [r.spiffe_id for r in rows]
    for i in range(0, len(sids), 500):
        sq = select(NS.c.spiffe_id, NS.c.type, NS.c.value).where(
            NS.c.spiffe_id.in_(sids[i : i + 500])
        )
        for sid, typ, val in conn.execute(sq.order_by(NS.c.id)):
            sels[sid].append(Selector(typ, val))
    return [_from_row(r, sels.get(r.spiffe_id, ())) for r in rows], [int(r.id) for r in rows]


def count(conn: Connection, where: list[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(N).where(*where)).scalar_one())
