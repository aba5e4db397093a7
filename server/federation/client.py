"""The SPIFFE bundle endpoint client: one foreign bundle fetched and stored.

A fetched bundle replaces the stored one only when it is a valid SPIFFE bundle (strict JWK Set
parsing, at least one X.509 authority) for the relationship's trust domain, fetched from an
endpoint that authenticated per its profile, and its ``spiffe_sequence`` is not lower than the
stored bundle's (an older copy, from a stale replica or a replay, never rolls trust back). Any
failure leaves the stored bundle as it was: workloads keep verifying with the last good one.

https_spiffe: the endpoint's X509-SVID must chain to the current bundle of the endpoint SPIFFE
ID's trust domain (normally the foreign domain itself, bootstrapped by ``bundle set`` or
``-trustDomainBundlePath``; the server's own bundle when the endpoint is in our domain) and
carry exactly ``endpoint_spiffe_id``. https_web: the system's web roots and the URL's host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

from cryptography import x509

from plastron.errors import FailedPrecondition, InvalidBundle, Unavailable
from plastron.records import FederationRelationship
from plastron.server.bundles import BundleStore, fetch_bundle
from plastron.server.federation.config import HTTPS_SPIFFE
from plastron.server.federation.http11 import HttpsUrl, https_get
from plastron.spiffe.bundle import MAX_BUNDLE_BYTES, Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.transport.tls import (
    PeerIdentityError,
    https_spiffe_client_context,
    https_web_client_context,
    verify_peer_spiffe_id,
)

FETCH_TIMEOUT = 30.0
OwnTrust = Callable[[], Sequence[x509.Certificate]]


async def _endpoint_trust(
    store: BundleStore, rel: FederationRelationship, own: TrustDomain, own_trust: OwnTrust
) -> Sequence[x509.Certificate]:
    assert rel.endpoint_spiffe_id is not None
    endpoint_td = rel.endpoint_spiffe_id.trust_domain
    if endpoint_td == own:
        return own_trust()
    held = await fetch_bundle(store, endpoint_td)
    if held is None or not held.x509_authorities:
        raise FailedPrecondition(
            f"federation with {rel.trust_domain.name!r}: no bundle for {endpoint_td.name!r} "
            f"to authenticate the bundle endpoint {rel.endpoint_spiffe_id}; bootstrap it with "
            "`bundle set` or -trustDomainBundlePath"
        )
    return held.x509_certificates()


async def fetch_endpoint_bundle(
    rel: FederationRelationship, trust: Sequence[x509.Certificate] | None
) -> Bundle:
    """The bundle ``rel``'s endpoint serves, authenticated per its profile."""
    url = HttpsUrl.parse(rel.bundle_endpoint_url)
    on_connected: Callable[[ssl.SSLObject], None] | None = None
    if rel.profile == HTTPS_SPIFFE:
        expected = rel.endpoint_spiffe_id
        assert expected is not None and trust is not None
        context = https_spiffe_client_context(trust)

        def on_connected(ssl_object: ssl.SSLObject) -> None:
            verify_peer_spiffe_id(ssl_object, expected)
    else:
        context = https_web_client_context()
    where = f"bundle endpoint {rel.bundle_endpoint_url} for {rel.trust_domain.name!r}"
    try:
        body = await asyncio.wait_for(
            https_get(url, context, max_bytes=MAX_BUNDLE_BYTES, on_connected=on_connected),
            FETCH_TIMEOUT,
        )
    except PeerIdentityError as exc:
        raise Unavailable(f"{where}: {exc}") from None
    except ssl.SSLError as exc:
        raise Unavailable(f"{where}: TLS failed: {exc.reason or exc}") from None
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise Unavailable(f"{where}: {type(exc).__name__}: {exc}") from None
    except Unavailable as exc:
        raise Unavailable(f"{where}: {exc}") from None
    bundle = Bundle.from_jwks(rel.trust_domain, body)
    if not bundle.x509_authorities:
        raise InvalidBundle(f"{where}: the bundle has no X.509 authority; keeping the last one")
    return bundle


def _replace_if_newer(fetched: Bundle, where: str) -> Callable[[bytes | None], bytes]:
    def apply(current: bytes | None) -> bytes:
        if current is not None:
            held = Bundle.from_json(current)
            if held.to_jwks() == fetched.to_jwks():
                return current
            if fetched.sequence_number < held.sequence_number:
                raise FailedPrecondition(
                    f"{where}: served sequence {fetched.sequence_number} is older than the held "
                    f"bundle's {held.sequence_number}; keeping the held bundle"
                )
        return fetched.to_json()

    return apply


async def refresh_bundle(
    store: BundleStore, rel: FederationRelationship, own: TrustDomain, own_trust: OwnTrust
) -> tuple[Bundle | None, bool]:
    """Fetch and store ``rel``'s bundle: (the bundle held afterwards, whether it changed).

    Raises a PlastronError saying why when the endpoint's bundle was not taken; the held bundle
    is then untouched.
    """
    trust = (
        await _endpoint_trust(store, rel, own, own_trust) if rel.profile == HTTPS_SPIFFE else None
    )
    fetched = await fetch_endpoint_bundle(rel, trust)
    before = await store.fetch_bundle(rel.trust_domain)
    where = f"bundle endpoint {rel.bundle_endpoint_url} for {rel.trust_domain.name!r}"
    after = await store.update_bundle(rel.trust_domain, _replace_if_newer(fetched, where))
    return Bundle.from_json(after), after != before
