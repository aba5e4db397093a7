"""Federation relationships: where and how to fetch a foreign trust domain's bundle."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from plastron.errors import InvalidArgument, NotFound
from plastron.records import FederationRelationship
from plastron.server.datastore.schema import MAX_ID_LEN, federated_trust_domains
from plastron.spiffe.ids import SpiffeId, TrustDomain

F = federated_trust_domains


def _check(rel: FederationRelationship) -> None:
    td = rel.trust_domain.name
    if rel.profile not in ("https_web", "https_spiffe"):
        raise InvalidArgument(
            f"federation {td!r}: profile {rel.profile!r} is not https_web or https_spiffe"
        )
    if (
        not rel.bundle_endpoint_url.startswith("https://")
        or len(rel.bundle_endpoint_url) > MAX_ID_LEN
    ):
        raise InvalidArgument(f"federation {td!r}: bundle_endpoint_url must be an https URL")
    if rel.profile == "https_spiffe" and rel.endpoint_spiffe_id is None:
        raise InvalidArgument(f"federation {td!r}: profile https_spiffe needs endpoint_spiffe_id")


def _values(rel: FederationRelationship) -> dict[str, Any]:
    return {
        "bundle_endpoint_url": rel.bundle_endpoint_url,
        "bundle_endpoint_profile": rel.profile,
        "endpoint_spiffe_id": "" if rel.endpoint_spiffe_id is None else str(rel.endpoint_spiffe_id),
    }


def _from_row(row: Any) -> FederationRelationship:
    return FederationRelationship(
        trust_domain=TrustDomain(row.trust_domain),
        bundle_endpoint_url=row.bundle_endpoint_url,
        profile=row.bundle_endpoint_profile,
        endpoint_spiffe_id=SpiffeId.parse(row.endpoint_spiffe_id)
        if row.endpoint_spiffe_id
        else None,
    )


def create(conn: Connection, rel: FederationRelationship) -> FederationRelationship:
    _check(rel)
    conn.execute(
        insert(F).values(trust_domain=rel.trust_domain.name, implicit=False, **_values(rel))
    )
    return rel


def fetch(conn: Connection, td: TrustDomain) -> FederationRelationship | None:
    row = conn.execute(select(F).where(F.c.trust_domain == td.name)).first()
    return None if row is None else _from_row(row)


def list_page(
    conn: Connection, after: int, limit: int | None
) -> tuple[list[FederationRelationship], list[int]]:
    q = select(F).where(F.c.id > after).order_by(F.c.id)
    if limit is not None:
        q = q.limit(limit)
    rows = list(conn.execute(q))
    return [_from_row(r) for r in rows], [int(r.id) for r in rows]


def update_rel(conn: Connection, rel: FederationRelationship) -> FederationRelationship:
    _check(rel)
    result = conn.execute(
        update(F).where(F.c.trust_domain == rel.trust_domain.name).values(**_values(rel))
    )
    if result.rowcount == 0:
        raise NotFound(f"federation relationship with {rel.trust_domain.name!r} does not exist")
    return rel


def remove(conn: Connection, td: TrustDomain) -> None:
    if conn.execute(delete(F).where(F.c.trust_domain == td.name)).rowcount == 0:
        raise NotFound(f"federation relationship with {td.name!r} does not exist")
