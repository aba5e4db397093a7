"""Registration entry queries (synchronous, on a Connection inside the caller's transaction)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Unpack

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from plastron.datastore import EntryFilters
from plastron.errors import DataStoreError, InvalidArgument, NotFound
from plastron.gcpause import gc_paused
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore import events
from plastron.server.datastore.filters import check_match, selector_predicate, set_match
from plastron.server.datastore.schema import (
    MAX_DNS_NAME,
    MAX_ENTRY_ID,
    MAX_HINT,
    bundles,
    dns_names,
    federated_registration_entries,
    registered_entries,
    selectors,
)
from plastron.spiffe.ids import SpiffeId, TrustDomain

E = registered_entries
MAX_ITEMS = 1_000  # selectors / dns names / federated trust domains per entry
MAX_TTL = 2**31 - 1
MAX_TIMESTAMP = 2**62
LOAD_CHUNK = 500
UPDATABLE = frozenset(
    {
        "spiffe_id",
        "parent_id",
        "selectors",
        "x509_svid_ttl",
        "jwt_svid_ttl",
        "federates_with",
        "admin",
        "downstream",
        "expires_at",
        "dns_names",
        "store_svid",
        "hint",
    }
)


def check_entry_id(entry_id: str) -> None:
    if not entry_id or len(entry_id) > MAX_ENTRY_ID:
        raise InvalidArgument(
            f"entry_id must be 1..{MAX_ENTRY_ID} characters (got {len(entry_id)})"
        )
    if not all("!" <= ch <= "~" for ch in entry_id):
        raise InvalidArgument(f"entry_id {entry_id[:40]!r} may hold only printable ASCII")


def validate_entry(entry: RegistrationEntry) -> None:
    check_entry_id(entry.entry_id)
    if not isinstance(entry.spiffe_id, SpiffeId) or not isinstance(entry.parent_id, SpiffeId):
        raise InvalidArgument("entry spiffe_id and parent_id must be SpiffeId values")
    if not entry.selectors:
        raise InvalidArgument(f"entry {entry.entry_id!r} has no selectors")
    for name, items in (
        ("selectors", entry.selectors),
        ("dns_names", entry.dns_names),
        ("federates_with", entry.federates_with),
    ):
        if len(items) > MAX_ITEMS:
            raise InvalidArgument(f"entry {name} has more than {MAX_ITEMS} items")
    for ttl_name in ("x509_svid_ttl", "jwt_svid_ttl"):
        ttl = getattr(entry, ttl_name)
        if not 0 <= ttl <= MAX_TTL:
            raise InvalidArgument(f"entry {ttl_name} {ttl} is outside 0..{MAX_TTL}")
    if not 0 <= entry.expires_at <= MAX_TIMESTAMP:
        raise InvalidArgument(f"entry expires_at {entry.expires_at} is out of range")
    if len(entry.hint) > MAX_HINT:
        raise InvalidArgument(f"entry hint is longer than {MAX_HINT} characters")
    for dns in entry.dns_names:
        if not dns or len(dns) > MAX_DNS_NAME:
            raise InvalidArgument(f"entry dns name {dns[:40]!r} must be 1..{MAX_DNS_NAME} chars")


def entry_hash(spiffe_id: SpiffeId, parent_id: SpiffeId, sels: Iterable[Selector]) -> str:
    """Identity of an entry for the "similar entry exists" rule: IDs plus the selector *set*."""
    canon = json.dumps(
        [str(spiffe_id), str(parent_id), sorted({(s.type, s.value) for s in sels})],
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def normalise(entry: RegistrationEntry) -> RegistrationEntry:
    """Drop repeated selectors and trust domains (they are sets), keeping first-seen order."""
    return dataclasses.replace(
        entry,
        selectors=tuple(dict.fromkeys(entry.selectors)),
        federates_with=tuple(dict.fromkeys(entry.federates_with)),
    )


def prepare_new(entry: RegistrationEntry, now: int) -> RegistrationEntry:
    if not entry.entry_id:
        entry = dataclasses.replace(entry, entry_id=str(uuid.uuid4()))
    entry = dataclasses.replace(normalise(entry), revision_number=0, created_at=now)
    validate_entry(entry)
    return entry


def _row_values(entry: RegistrationEntry) -> dict[str, Any]:
    return {
        "entry_id": entry.entry_id,
        "spiffe_id": str(entry.spiffe_id),
        "parent_id": str(entry.parent_id),
        "entry_hash": entry_hash(entry.spiffe_id, entry.parent_id, entry.selectors),
        "ttl": entry.x509_svid_ttl,
        "jwt_svid_ttl": entry.jwt_svid_ttl,
        "admin": entry.admin,
        "downstream": entry.downstream,
        "expiry": entry.expires_at,
        "revision_number": entry.revision_number,
        "store_svid": entry.store_svid,
        "hint": entry.hint,
        "created_at": entry.created_at,
    }


def _bundle_ids(conn: Connection, tds: Sequence[TrustDomain]) -> list[int]:
    if not tds:
        return []
    names = [td.name for td in tds]
    rows = conn.execute(
        select(bundles.c.trust_domain, bundles.c.id).where(bundles.c.trust_domain.in_(names))
    )
    found = {str(r[0]): int(r[1]) for r in rows}
    for name in names:
        if name not in found:
            raise NotFound(f"federated bundle for trust domain {name!r} does not exist")
    return [found[n] for n in names]


def _write_children(conn: Connection, pk: int, entry: RegistrationEntry, which: set[str]) -> None:
    if "selectors" in which:
        conn.execute(delete(selectors).where(selectors.c.registered_entry_id == pk))
        conn.execute(
            insert(selectors),
            [
                {"registered_entry_id": pk, "type": s.type, "value": s.value}
                for s in entry.selectors
            ],
        )
    if "dns_names" in which:
        conn.execute(delete(dns_names).where(dns_names.c.registered_entry_id == pk))
        if entry.dns_names:
            conn.execute(
                insert(dns_names),
                [{"registered_entry_id": pk, "value": d} for d in entry.dns_names],
            )
    if "federates_with" in which:
        fed = federated_registration_entries
        conn.execute(delete(fed).where(fed.c.registered_entry_id == pk))
        ids = _bundle_ids(conn, entry.federates_with)
        if ids:
            conn.execute(insert(fed), [{"registered_entry_id": pk, "bundle_id": b} for b in ids])


def insert_entry(conn: Connection, entry: RegistrationEntry, now: int) -> RegistrationEntry:
    """Insert a prepared entry; a unique violation surfaces as IntegrityError to the caller."""
    inserted = conn.execute(insert(E).values(**_row_values(entry))).inserted_primary_key
    if inserted is None:
        raise DataStoreError("datastore: the database returned no id for the new entry")
    pk = int(inserted[0])
    _write_children(conn, pk, entry, {"selectors", "dns_names", "federates_with"})
    events.record_entry_event(conn, entry.entry_id, now)
    return entry


def find_by_hash(conn: Connection, entry: RegistrationEntry) -> RegistrationEntry | None:
    digest = entry_hash(entry.spiffe_id, entry.parent_id, entry.selectors)
    pks = [int(r[0]) for r in conn.execute(select(E.c.id).where(E.c.entry_hash == digest))]
    found = load_entries(conn, pks)
    return found[0] if found else None


def entry_id_taken(conn: Connection, entry_id: str) -> bool:
    return conn.execute(select(E.c.id).where(E.c.entry_id == entry_id)).first() is not None


# ---- reading -----------------------------------------------------------------------------------


def load_entries(conn: Connection, pks: Sequence[int] | None) -> list[RegistrationEntry]:
    """Full records for the given primary keys (all entries when None), in primary-key order."""
    if pks is not None and not pks:
        return []
    chunks: list[Sequence[int] | None] = (
        [None] if pks is None else [pks[i : i + LOAD_CHUNK] for i in range(0, len(pks), LOAD_CHUNK)]
    )
    out: list[RegistrationEntry] = []
    for chunk in chunks:
        out.extend(_load_chunk(conn, chunk))
    return out


def load_all_entries(conn: Connection) -> list[RegistrationEntry]:
    """Every entry (the cache's full rebuild), built with the cyclic collector paused."""
    with gc_paused():
        return load_entries(conn, None)


class _Children:
    """An entry chunk's selectors, DNS names and federated trust domains, keyed by entry pk."""

    def __init__(self, conn: Connection, pks: Sequence[int] | None) -> None:
        def scoped(q: Select[Any], col: Any) -> Select[Any]:
            return q if pks is None else q.where(col.in_(pks))

        # Common selectors repeat across entries: build each distinct one once.
        cache: dict[tuple[str, str], Selector] = {}
        self.selectors: dict[int, list[Selector]] = defaultdict(list)
        sq: Select[Any] = select(
            selectors.c.registered_entry_id, selectors.c.type, selectors.c.value
        )
        for eid, typ, val in conn.execute(
            scoped(sq, selectors.c.registered_entry_id).order_by(selectors.c.id)
        ).all():
            found = cache.get((typ, val))
            if found is None:
                # A type is shared by most selectors ("unix", "k8s"): one copy of it.
                found = cache[(typ, val)] = Selector(sys.intern(typ), val)
            self.selectors[eid].append(found)
        self.dns: dict[int, list[str]] = defaultdict(list)
        dq: Select[Any] = select(dns_names.c.registered_entry_id, dns_names.c.value)
        for eid, val in conn.execute(
            scoped(dq, dns_names.c.registered_entry_id).order_by(dns_names.c.id)
        ).all():
            self.dns[eid].append(val)
        self.federated: dict[int, list[TrustDomain]] = defaultdict(list)
        f = federated_registration_entries
        fq: Select[Any] = select(f.c.registered_entry_id, bundles.c.trust_domain).join(
            bundles, bundles.c.id == f.c.bundle_id
        )
        for eid, td in conn.execute(
            scoped(fq, f.c.registered_entry_id).order_by(bundles.c.trust_domain)
        ).all():
            self.federated[eid].append(TrustDomain(td))


_ENTRY_COLUMNS = (
    E.c.id,
    E.c.entry_id,
    E.c.spiffe_id,
    E.c.parent_id,
    E.c.ttl,
    E.c.jwt_svid_ttl,
    E.c.admin,
    E.c.downstream,
    E.c.expiry,
    E.c.revision_number,
    E.c.store_svid,
    E.c.hint,
    E.c.created_at,
)


def _load_chunk(conn: Connection, pks: Sequence[int] | None) -> list[RegistrationEntry]:
    children = _Children(conn, pks)
    # Parent IDs repeat across entries: parse each distinct one once.
    ids: dict[str, SpiffeId] = {}

    def spiffe(text: str) -> SpiffeId:
        found = ids.get(text)
        if found is None:
            found = ids[text] = SpiffeId.parse(text)
        return found

    query = select(*_ENTRY_COLUMNS)
    if pks is not None:
        query = query.where(E.c.id.in_(pks))
    rows = conn.execute(query.order_by(E.c.id)).all()
    no_children: tuple[()] = ()
    sels, federated, dns = children.selectors, children.federated, children.dns
    # Positional tuples, not Row attribute lookups: this loop runs once per entry on every
    # full cache rebuild (100,000 entries and more).
    return [
        RegistrationEntry(
            entry_id=entry_id,
            spiffe_id=SpiffeId.parse(spiffe_id),
            parent_id=spiffe(parent_id),
            selectors=tuple(sels.get(pk, no_children)),
            x509_svid_ttl=int(ttl),
            jwt_svid_ttl=int(jwt_ttl),
            federates_with=tuple(federated.get(pk, no_children)),
            admin=bool(admin),
            downstream=bool(downstream),
            expires_at=int(expiry),
            dns_names=tuple(dns.get(pk, no_children)),
            revision_number=int(revision),
            store_svid=bool(store_svid),
            hint=hint,
            created_at=int(created_at),
        )
        for (
            pk,
            entry_id,
            spiffe_id,
            parent_id,
            ttl,
            jwt_ttl,
            admin,
            downstream,
            expiry,
            revision,
            store_svid,
            hint,
            created_at,
        ) in rows
    ]


def pks_for_ids(
    conn: Connection, entry_ids: Sequence[str], *, lock: bool = False
) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(entry_ids), LOAD_CHUNK):
        q = select(E.c.entry_id, E.c.id).where(E.c.entry_id.in_(entry_ids[i : i + LOAD_CHUNK]))
        if lock:
            q = q.with_for_update()
        out.update({str(r[0]): int(r[1]) for r in conn.execute(q)})
    return out


def fetch_entries(conn: Connection, entry_ids: Sequence[str]) -> dict[str, RegistrationEntry]:
    pks = pks_for_ids(conn, list(dict.fromkeys(entry_ids)))
    return {e.entry_id: e for e in load_entries(conn, sorted(pks.values()))}


# ---- writing -----------------------------------------------------------------------------------


def update_entry(
    conn: Connection, entry: RegistrationEntry, mask: set[str] | None, now: int
) -> RegistrationEntry:
    fields = set(UPDATABLE) if mask is None else set(mask)
    unknown = fields - UPDATABLE
    if unknown:
        raise InvalidArgument(f"update mask names fields that cannot be updated: {sorted(unknown)}")
    pk = pks_for_ids(conn, [entry.entry_id], lock=True).get(entry.entry_id)
    if pk is None:
        raise NotFound(f"entry {entry.entry_id!r} does not exist")
    current = load_entries(conn, [pk])[0]
    entry = normalise(entry)
    changes = {name: getattr(entry, name) for name in fields}
    updated = dataclasses.replace(current, **changes, revision_number=current.revision_number + 1)
    validate_entry(updated)
    values = _row_values(updated)
    del values["entry_id"], values["created_at"]
    conn.execute(update(E).where(E.c.id == pk).values(**values))
    _write_children(conn, pk, updated, fields)
    events.record_entry_event(conn, updated.entry_id, now)
    return updated


def delete_entries(conn: Connection, entry_ids: Sequence[str], now: int) -> list[RegistrationEntry]:
    """Delete the named entries that exist; returns them (children go by ON DELETE CASCADE)."""
    pks = pks_for_ids(conn, list(dict.fromkeys(entry_ids)), lock=True)
    if not pks:
        return []
    found = load_entries(conn, sorted(pks.values()))
    _delete_pks(conn, sorted(pks.values()))
    events.record_entry_events(conn, [e.entry_id for e in found], now)
    return found


def _delete_pks(conn: Connection, pks: Sequence[int]) -> None:
    for i in range(0, len(pks), LOAD_CHUNK):
        chunk = pks[i : i + LOAD_CHUNK]
        # Children explicitly too: MySQL honours ON DELETE CASCADE, but be independent of it.
        for child, col in (
            (selectors, selectors.c.registered_entry_id),
            (dns_names, dns_names.c.registered_entry_id),
            (federated_registration_entries, federated_registration_entries.c.registered_entry_id),
        ):
            conn.execute(delete(child).where(col.in_(chunk)))
        conn.execute(delete(E).where(E.c.id.in_(chunk)))


def prune_entries(conn: Connection, expires_before: int, now: int) -> int:
    q = select(E.c.entry_id).where(E.c.expiry > 0, E.c.expiry < expires_before)
    ids = [str(r[0]) for r in conn.execute(q)]
    return len(delete_entries(conn, ids, now))


# ---- listing -----------------------------------------------------------------------------------


def entry_filter(**filters: Unpack[EntryFilters]) -> list[Any]:
    """WHERE clauses over ``registered_entries`` for the given filters."""
    where: list[Any] = []
    if (by_spiffe_id := filters.get("by_spiffe_id")) is not None:
        where.append(E.c.spiffe_id == str(by_spiffe_id))
    if (by_parent_id := filters.get("by_parent_id")) is not None:
        where.append(E.c.parent_id == str(by_parent_id))
    if (by_hint := filters.get("by_hint")) is not None:
        where.append(E.c.hint == by_hint)
    if (by_downstream := filters.get("by_downstream")) is not None:
        where.append(E.c.downstream == by_downstream)
    if (by_selectors := filters.get("by_selectors")) is not None:
        sels, match = by_selectors
        check_match("by_selectors", sels, match)
        pred = selector_predicate(selectors.c.type, selectors.c.value, sels)
        key = selectors.c.registered_entry_id
        where.append(E.c.id.in_(set_match(selectors, key, pred, len(set(sels)), match)))
    if (by_federates_with := filters.get("by_federates_with")) is not None:
        tds, match = by_federates_with
        check_match("by_federates_with", tds, match)
        f = federated_registration_entries
        src = f.join(bundles, bundles.c.id == f.c.bundle_id)
        pred = bundles.c.trust_domain.in_([td.name for td in tds])
        where.append(
            E.c.id.in_(set_match(src, f.c.registered_entry_id, pred, len(set(tds)), match))
        )
    return where


def list_entry_pks(conn: Connection, where: list[Any], after: int, limit: int | None) -> list[int]:
    q = select(E.c.id).where(*where, E.c.id > after).order_by(E.c.id)
    if limit is not None:
        q = q.limit(limit)
    return [int(r[0]) for r in conn.execute(q)]


def count_entries(conn: Connection, where: list[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(E).where(*where)).scalar_one())
