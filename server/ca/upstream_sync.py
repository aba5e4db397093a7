"""A nested server follows its upstream's trust bundle (UpstreamAuthority ``spire``).

The upstream's bundle is the trust domain's: its X.509 roots, every server's published JWT
key, and the operator's taints and revocations. Each poll merges it into this server's bundle
(so agents and workloads below learn of them through their usual sync) and reacts to taints
as SPIRE's downstream servers do: a current X.509 CA that chains to a root tainted upstream,
or a current JWT key tainted upstream, is replaced at once by a newly prepared and activated
one, so nothing this server signs afterwards depends on the tainted key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection

from plastron.server.ca import bundle_updates
from plastron.server.ca.authorities import AuthorityManager
from plastron.server.ca.journal import AuthorityStatus
from plastron.server.ca.slots import X509CA
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.taint import chained_to
from plastron.upstream import UpstreamBundleSource

log = logging.getLogger(__name__)


def merge_upstream(
    data: bytes | None,
    td: TrustDomain,
    upstream: Bundle,
    *,
    keep_x509: Collection[str] = (),
    keep_jwt: Collection[str] = (),
) -> bytes:
    """Our stored bundle made to follow ``upstream``: its authorities added, its taints copied,
    and ours that it no longer has removed (revoked upstream), except ``keep_x509`` (authority
    IDs our own CAs chain to) and ``keep_jwt`` (our own key IDs, which the upstream may not
    have yet). A taint made here is never undone by an untainted upstream copy."""
    bundle = before = bundle_updates.load(data, td)
    for x in upstream.x509_authorities:
        bundle = bundle.with_x509_authority(x.certificate, tainted=x.tainted)
    ours = {j.key_id: j for j in bundle.jwt_authorities}
    for j in upstream.jwt_authorities:
        local = ours.get(j.key_id)
        tainted = j.tainted or (local is not None and local.tainted)
        bundle = bundle.with_jwt_authority(dataclasses.replace(j, tainted=tainted))
    upstream_x509 = {x.authority_id for x in upstream.x509_authorities}
    for x in bundle.x509_authorities:
        if x.authority_id not in upstream_x509 and x.authority_id not in keep_x509:
            log.warning("authority revoked upstream, removed authority_id=%s", x.authority_id)
            bundle = bundle.without_x509_authority(x.authority_id)
    upstream_jwt = set(upstream.jwt_keys())
    for j in bundle.jwt_authorities:
        if j.key_id not in upstream_jwt and j.key_id not in keep_jwt:
            log.warning("JWT key revoked upstream, removed kid=%s", j.key_id)
            bundle = bundle.without_jwt_authority(j.key_id)
    if bundle == before and data is not None:
        return data
    return bundle.to_json()


def _roots_of(ca: X509CA | None, bundle: Bundle) -> set[str]:
    """The IDs of the bundle's authorities that ``ca`` chains to."""
    if ca is None or ca.status is AuthorityStatus.OLD:
        return set()
    chain = [ca.certificate, *ca.chain]
    return {x.authority_id for x in bundle.x509_authorities if chained_to(chain, [x.certificate])}


async def follow_upstream(manager: AuthorityManager, source: UpstreamBundleSource) -> None:
    """One poll: fetch the upstream bundle, merge it, replace what a taint upstream reached."""
    upstream = await source.fetch_bundle()
    async with manager.lock:
        stored = await manager.stored_bundle()
        keep_x509 = _roots_of(manager.current_x509, stored) | _roots_of(manager.next_x509, stored)
        keep_jwt = manager.own_jwt_key_ids()
        merged = await manager.edit_bundle(
            lambda d: merge_upstream(
                d, manager.trust_domain, upstream, keep_x509=keep_x509, keep_jwt=keep_jwt
            )
        )
        await _replace_tainted(manager, merged)


async def _replace_tainted(manager: AuthorityManager, bundle: Bundle) -> None:
    tainted = [x.certificate for x in bundle.x509_authorities if x.tainted]
    current = manager.current_x509
    if current is not None and chained_to([current.certificate, *current.chain], tainted):
        log.warning(
            "current x509 ca chains to an authority tainted upstream; rotating authority_id=%s",
            current.authority_id,
        )
        nxt = manager.next_x509
        if (
            nxt is None
            or nxt.status is not AuthorityStatus.PREPARED
            or chained_to([nxt.certificate, *nxt.chain], tainted)
        ):
            await manager.prepare_x509()
        await manager.activate_x509()
    tainted_kids = {j.key_id for j in bundle.jwt_authorities if j.tainted}
    jwt = manager.current_jwt
    if jwt is not None and jwt.kid in tainted_kids:
        log.warning("current JWT key tainted upstream; rotating kid=%s", jwt.kid)
        nxt_jwt = manager.next_jwt
        if (
            nxt_jwt is None
            or nxt_jwt.status is not AuthorityStatus.PREPARED
            or (nxt_jwt.kid in tainted_kids)
        ):
            await manager.prepare_jwt()
        await manager.activate_jwt()
