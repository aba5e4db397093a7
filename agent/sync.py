"""The sync loop's work: entries, bundles and workload SVIDs from the server into the cache.

Workload keys are generated in memory (``workload_x509_svid_key_type``) and never leave the
agent; the server sees only CSRs. Every SVID the server returns is checked: it certifies our key,
names the entry's SPIFFE ID and chains to our bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cryptography import x509

from plastron.agent.cache import WorkloadCache, WorkloadEntry
from plastron.agent.server_client import ServerClient
from plastron.agent.wire import csr_der, svid_with_key
from plastron.clock import Clock
from plastron.errors import InvalidArgument, InvalidSvid
from plastron.keymanager import KeyType, PrivateKey, new_private_key
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwtsvid import JwtSvid, validate_jwt_svid
from plastron.spiffe.x509svid import X509Svid, validate_x509_svid
from plastron.wire.limits import MAX_X509_SVID_BATCH

log = logging.getLogger("plastron.agent.sync")


class WorkloadSync:
    def __init__(
        self,
        client: ServerClient,
        cache: WorkloadCache,
        on_bundle: Callable[[Bundle], None],
        clock: Clock,
        key_type: KeyType = KeyType.EC_P256,
    ) -> None:
        self._client = client
        self._cache = cache
        self._on_bundle = on_bundle
        self._clock = clock
        self._key_type = key_type
        self.last_success: float | None = None

    async def sync_once(self) -> None:
        """One round: entries, bundles, then SVIDs for new or half-expired entries."""
        known = {e.entry_id: e for e in self._cache.entries()}
        entries = await self._client.authorized_entries(known)
        self._cache.set_entries(entries)
        bundle = await self._client.get_bundle()
        if bundle != self._cache.bundle:
            self._cache.set_bundle(bundle)
            self._on_bundle(bundle)  # the agent identity: its TLS trusts the new bundle
        await self._sync_federated(entries)
        self._cache.svid_wanted.clear()
        await self._mint_svids(self._cache.entries_needing_svid(), bundle)
        self.last_success = self._clock.now().timestamp()

    async def _sync_federated(self, entries: list[WorkloadEntry]) -> None:
        wanted: set[TrustDomain] = set()
        for entry in entries:
            wanted |= entry.federates_with
        wanted.discard(self._cache.trust_domain)
        current = dict(self._cache.federated_bundles)
        fresh: dict[TrustDomain, Bundle] = {}
        for td in sorted(wanted, key=lambda t: t.name):
            try:
                fresh[td] = await self._client.get_federated_bundle(td)
            except Exception as exc:  # keep serving the last copy we had
                log.warning("federated bundle not refreshed trust_domain=%s error=%s", td, exc)
                if td in current:
                    fresh[td] = current[td]
        self._cache.set_federated_bundles(fresh)

    async def _mint_svids(self, entries: list[WorkloadEntry], bundle: Bundle) -> None:
        for start in range(0, len(entries), MAX_X509_SVID_BATCH):
            batch = entries[start : start + MAX_X509_SVID_BATCH]
            keys: dict[str, PrivateKey] = {}
            csrs: dict[str, bytes] = {}
            for entry in batch:
                keys[entry.entry_id] = new_private_key(self._key_type)
                csrs[entry.entry_id] = csr_der(keys[entry.entry_id])
            results = await self._client.new_x509_svids(csrs)
            minted: dict[str, X509Svid] = {}
            for entry in batch:
                result = results[entry.entry_id]
                if isinstance(result, str):
                    log.warning("SVID not issued entry_id=%s error=%s", entry.entry_id, result)
                    continue
                try:
                    minted[entry.entry_id] = self._checked(entry, result, keys, bundle)
                except InvalidArgument as exc:
                    log.error("server SVID refused entry_id=%s error=%s", entry.entry_id, exc)
            self._cache.set_x509_svids(minted)
            if minted:
                log.info("workload SVIDs updated count=%d", len(minted))

    def _checked(
        self,
        entry: WorkloadEntry,
        chain: list[x509.Certificate],
        keys: dict[str, PrivateKey],
        bundle: Bundle,
    ) -> X509Svid:
        svid = svid_with_key(chain, keys[entry.entry_id])
        if svid.spiffe_id != entry.spiffe_id:
            raise InvalidSvid(f"server issued {svid.spiffe_id} for entry of {entry.spiffe_id}")
        validate_x509_svid(svid.chain, bundle.x509_certificates(), self._clock.now())
        return svid

    # JwtSvidSource for the Workload API.
    async def new_jwt_svid(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> JwtSvid:
        svid = await self._client.new_jwt_svid(entry.entry_id, audience)
        bundle = self._cache.bundle
        if bundle is None:
            raise InvalidSvid("no bundle yet to check the server's JWT-SVID")
        checked = validate_jwt_svid(
            svid.token, audience=audience, authorities=bundle.jwt_keys(), now=self._clock.now()
        )
        if checked.spiffe_id != entry.spiffe_id:
            raise InvalidSvid(
                f"server issued a JWT-SVID for {checked.spiffe_id}, not {entry.spiffe_id}"
            )
        return checked


async def wait_or_wake(event: asyncio.Event, seconds: float) -> None:
    """Sleep until ``seconds`` pass or ``event`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
