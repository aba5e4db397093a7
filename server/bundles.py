"""Reading and changing trust bundles in the datastore (own and federated).

The datastore stores each bundle as ``Bundle.to_json()`` (lossless: tainted flags, JWT key
expiry). Appends go through ``update_bundle`` so concurrent servers never lose an authority.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from plastron.errors import NotFound
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import TrustDomain


class BundleStore(Protocol):
    async def fetch_bundle(self, td: TrustDomain) -> bytes | None: ...

    async def update_bundle(
        self, td: TrustDomain, fn: Callable[[bytes | None], bytes]
    ) -> bytes: ...


async def load_bundle(store: BundleStore, td: TrustDomain) -> Bundle:
    data = await store.fetch_bundle(td)
    if data is None:
        raise NotFound(f"no bundle for trust domain {td.name!r}")
    return Bundle.from_json(data)


async def fetch_bundle(store: BundleStore, td: TrustDomain) -> Bundle | None:
    data = await store.fetch_bundle(td)
    return None if data is None else Bundle.from_json(data)


async def append_authorities(
    store: BundleStore,
    td: TrustDomain,
    x509_authorities: Sequence[X509Authority],
    jwt_authorities: Sequence[JwtAuthority],
) -> Bundle:
    """Add authorities to ``td``'s bundle (creating it if absent); existing ones are kept."""

    def apply(current: bytes | None) -> bytes:
        bundle = Bundle(trust_domain=td) if current is None else Bundle.from_json(current)
        known_x509 = {a.authority_id for a in bundle.x509_authorities}
        for a in x509_authorities:
            if a.authority_id not in known_x509:
                bundle = bundle.with_x509_authority(a.certificate, tainted=a.tainted)
                known_x509.add(a.authority_id)
        known_jwt = {j.key_id for j in bundle.jwt_authorities}
        for j in jwt_authorities:
            if j.key_id not in known_jwt:
                bundle = bundle.with_jwt_authority(j)
                known_jwt.add(j.key_id)
        return bundle.to_json()

    return Bundle.from_json(await store.update_bundle(td, apply))
