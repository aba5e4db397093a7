"""Keeps every federated trust domain's bundle fresh from its bundle endpoint.

Relationships come from the config file's ``federates_with`` blocks and from the datastore
(the TrustDomain API); for the same trust domain the config file wins, as in SPIRE. The set is
re-read every ``RELOAD_SECONDS``, so an API change takes effect without a restart.

Each relationship polls on its bundle's refresh hint divided by ``ATTEMPTS_PER_HINT`` (SPIRE's
4 tries per hint, so a short outage does not delay a rotation by a whole hint). The hint is
bounded to [``MIN_REFRESH_HINT``, ``MAX_REFRESH_HINT``]: an endpoint cannot make us poll it in
a tight loop, nor stop us polling for days. Without a hint the shortest X.509 authority
lifetime / 10 is used, or ``DEFAULT_REFRESH_HINT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from plastron.datastore import DataStore
from plastron.errors import PlastronError
from plastron.records import FederationRelationship
from plastron.server.bundles import fetch_bundle
from plastron.server.federation.client import OwnTrust, refresh_bundle
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain

log = logging.getLogger(__name__)

MIN_REFRESH_HINT = 60.0  # SPIRE's bundleutil.MinimumRefreshHint
MAX_REFRESH_HINT = 24 * 3600.0
DEFAULT_REFRESH_HINT = 300.0
ATTEMPTS_PER_HINT = 4
RELOAD_SECONDS = 10.0
_LIST_PAGE = 500


def next_refresh_seconds(bundle: Bundle | None) -> float:
    """Seconds until the next fetch for a domain whose held bundle is ``bundle``."""
    if bundle is None:
        return MIN_REFRESH_HINT / ATTEMPTS_PER_HINT
    hint: float
    if bundle.refresh_hint:
        hint = float(bundle.refresh_hint)
    elif bundle.x509_authorities:
        lifetimes = [
            (c.not_valid_after_utc - c.not_valid_before_utc).total_seconds()
            for c in bundle.x509_certificates()
        ]
        hint = min(lifetimes) / 10
    else:
        hint = DEFAULT_REFRESH_HINT
    return min(max(hint, MIN_REFRESH_HINT), MAX_REFRESH_HINT) / ATTEMPTS_PER_HINT


@dataclass
class _Updater:
    rel: FederationRelationship
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FederationManager:
    def __init__(
        self,
        own: TrustDomain,
        datastore: DataStore,
        configured: Sequence[FederationRelationship],
        own_trust: OwnTrust,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._own = own
        self._datastore = datastore
        self._configured = {r.trust_domain: r for r in configured}
        self._own_trust = own_trust
        self._on_change = on_change
        self._updaters: dict[TrustDomain, _Updater] = {}
        self._reload_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.reload()
                except Exception as exc:  # the next reload retries; running updaters go on
                    log.warning("federation: cannot reload relationships error=%s", exc)
                await asyncio.sleep(RELOAD_SECONDS)
        finally:
            for updater in self._updaters.values():
                if updater.task is not None:
                    updater.task.cancel()

    async def _relationships(self) -> dict[TrustDomain, FederationRelationship]:
        found: dict[TrustDomain, FederationRelationship] = {}
        token = ""
        while True:
            page, token = await self._datastore.list_federation_relationships(_LIST_PAGE, token)
            found.update((r.trust_domain, r) for r in page)
            if not token:
                break
        found.update(self._configured)
        return found

    async def reload(self) -> None:
        async with self._reload_lock:
            wanted = await self._relationships()
            for td in list(self._updaters):
                if td not in wanted:
                    log.info("federation: trust domain no longer managed trust_domain=%s", td)
                    updater = self._updaters.pop(td)
                    if updater.task is not None:
                        updater.task.cancel()
            for td, rel in wanted.items():
                current = self._updaters.get(td)
                if current is not None:
                    if current.rel != rel:
                        current.rel = rel
                        current.wake.set()
                    continue
                log.info(
                    "federation: trust domain now managed trust_domain=%s url=%s profile=%s",
                    td,
                    rel.bundle_endpoint_url,
                    rel.profile,
                )
                updater = self._updaters[td] = _Updater(rel)
                updater.task = asyncio.create_task(self._poll(updater), name=f"federation-{td}")

    async def refresh_now(self, td: TrustDomain) -> bool:
        """Fetch ``td``'s bundle now (RefreshBundle); False if no relationship manages it.

        Raises the PlastronError that kept the endpoint's bundle from being taken.
        """
        await self.reload()
        updater = self._updaters.get(td)
        if updater is None:
            return False
        await self._update(updater)
        return True

    async def _update(self, updater: _Updater) -> Bundle | None:
        async with updater.lock:
            rel = updater.rel
            bundle, changed = await refresh_bundle(self._datastore, rel, self._own, self._own_trust)
        if changed:
            log.info(
                "federation: bundle refreshed trust_domain=%s sequence=%s",
                rel.trust_domain,
                bundle.sequence_number if bundle else None,
            )
            self._on_change()
        return bundle

    async def _poll(self, updater: _Updater) -> None:
        td = updater.rel.trust_domain
        while True:
            updater.wake.clear()
            try:
                held = await self._update(updater)
            except (PlastronError, ValueError) as exc:
                log.warning("federation: bundle not refreshed trust_domain=%s error=%s", td, exc)
                held = await self._held(td)
            except Exception as exc:  # unexpected: report and keep polling
                log.exception("federation: bundle refresh failed trust_domain=%s: %s", td, exc)
                held = await self._held(td)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(updater.wake.wait(), next_refresh_seconds(held))

    async def _held(self, td: TrustDomain) -> Bundle | None:
        try:
            return await fetch_bundle(self._datastore, td)
        except PlastronError:
            return None
