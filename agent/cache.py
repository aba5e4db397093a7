"""The agent's workload cache: entries, their X509-SVIDs, JWT-SVIDs, bundles; subscribers.

Workloads match an entry when the entry's selectors are a subset of the workload's selectors.
Subscribers (Workload API streams) are woken on every change and compute the full current state
for their selectors; they only push when that state differs from what they last sent.

X509-SVIDs are bounded by ``max_x509_svids`` (SPIRE's soft ``x509_svid_cache_max_size``): beyond
it the least recently used SVIDs of entries no subscriber matches are evicted and fetched again
on demand. JWT-SVIDs are cached per (entry, audience set) until half-life, hard-bounded.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from plastron.clock import Clock
from plastron.selector import Selector
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import JwtSvid
from plastron.spiffe.taint import chained_to, jwt_key_id, tainted_authorities
from plastron.spiffe.x509svid import X509Svid

DEFAULT_MAX_X509_SVIDS = 1000
DEFAULT_MAX_JWT_SVIDS = 1000


@dataclass(frozen=True)
class WorkloadEntry:
    """A registration entry as the agent needs it."""

    entry_id: str
    spiffe_id: SpiffeId
    selectors: frozenset[Selector]
    federates_with: frozenset[TrustDomain] = frozenset()
    dns_names: tuple[str, ...] = ()
    hint: str = ""
    revision: int = 0
    # Withheld from DelegatedIdentity callers, as SPIRE does: a delegate acts for workloads,
    # never with their admin or downstream powers.
    admin: bool = False
    downstream: bool = False


@dataclass(frozen=True)
class Identity:
    entry: WorkloadEntry
    svid: X509Svid


@dataclass(frozen=True)
class WorkloadUpdate:
    """Everything one workload is entitled to right now."""

    identities: tuple[Identity, ...]
    bundle: Bundle | None
    federated_bundles: Mapping[TrustDomain, Bundle] = field(default_factory=dict)
    # Cache generation of each bundle included, so equal states compare equal cheaply.
    bundle_versions: tuple[tuple[str, int], ...] = ()

    def key(self) -> tuple[object, ...]:
        """Identity of this state, to tell whether a subscriber has already sent it."""
        ids = tuple(
            (i.entry.entry_id, i.entry.hint, i.svid.leaf.serial_number) for i in self.identities
        )
        return ids, self.bundle_versions


def half_life(not_before: _dt.datetime, not_after: _dt.datetime) -> _dt.datetime:
    return not_before + (not_after - not_before) / 2


class Subscription:
    """A Workload API stream's view: await ``next()`` for each state to send."""

    def __init__(self, cache: WorkloadCache, selectors: frozenset[Selector]) -> None:
        self._cache = cache
        self.selectors = selectors
        self._changed = asyncio.Event()
        self._changed.set()
        self._last: tuple[object, ...] | None = None

    def notify(self) -> None:
        self._changed.set()

    async def next(self) -> WorkloadUpdate:
        """The next state that differs from the last one returned (the first at once)."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            update = self._cache.update_for(self.selectors)
            key = update.key()
            if key != self._last:
                self._last = key
                return update

    def close(self) -> None:
        self._cache.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkloadCache:
    def __init__(
        self,
        trust_domain: TrustDomain,
        clock: Clock,
        *,
        max_x509_svids: int = DEFAULT_MAX_X509_SVIDS,
        max_jwt_svids: int = DEFAULT_MAX_JWT_SVIDS,
    ) -> None:
        self.trust_domain = trust_domain
        self._clock = clock
        self._max_x509 = max_x509_svids
        self._max_jwt = max_jwt_svids
        self._entries: dict[str, WorkloadEntry] = {}
        self._by_selector: dict[Selector, set[str]] = {}
        self._svids: OrderedDict[str, X509Svid] = OrderedDict()  # LRU order: oldest first
        self._jwts: OrderedDict[tuple[str, tuple[str, ...]], JwtSvid] = OrderedDict()
        self._bundle: Bundle | None = None
        self._federated: dict[TrustDomain, Bundle] = {}
        self._subscribers: set[Subscription] = set()
        self._bundle_gen: dict[TrustDomain, int] = {}
        # Set when a workload matched an entry that has no usable SVID: wakes the sync early.
        self.svid_wanted = asyncio.Event()

    # ---- subscriptions ---------------------------------------------------------------------

    def subscribe(self, selectors: Iterable[Selector]) -> Subscription:
        sub = Subscription(self, frozenset(selectors))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _notify(self) -> None:
        for sub in self._subscribers:
            sub.notify()

    # ---- reads -----------------------------------------------------------------------------

    def matching_entries(self, selectors: Iterable[Selector]) -> list[WorkloadEntry]:
        """Entries whose selectors are all among ``selectors``, in a stable order."""
        have = frozenset(selectors)
        candidates: set[str] = set()
        for sel in have:
            candidates |= self._by_selector.get(sel, set())
        found = [self._entries[i] for i in candidates if self._entries[i].selectors <= have]
        return sorted(found, key=lambda e: (str(e.spiffe_id), e.entry_id))

    def update_for(self, selectors: Iterable[Selector]) -> WorkloadUpdate:
        now = self._clock.now()
        identities: list[Identity] = []
        federated: dict[TrustDomain, Bundle] = {}
        for entry in self.matching_entries(selectors):
            svid = self._svids.get(entry.entry_id)
            if svid is None or svid.expires_at <= now:
                self.svid_wanted.set()
                continue
            self._svids.move_to_end(entry.entry_id)
            identities.append(Identity(entry, svid))
            for td in entry.federates_with:
                if td in self._federated:
                    federated[td] = self._federated[td]
        versions = [(td.name, self._bundle_gen.get(td, 0)) for td in federated]
        versions.append(("", self._bundle_gen.get(self.trust_domain, 0)))
        return WorkloadUpdate(tuple(identities), self._bundle, federated, tuple(sorted(versions)))

    def entries(self) -> list[WorkloadEntry]:
        return list(self._entries.values())

    def entry(self, entry_id: str) -> WorkloadEntry | None:
        return self._entries.get(entry_id)

    def x509_svid(self, entry_id: str) -> X509Svid | None:
        return self._svids.get(entry_id)

    @property
    def x509_svid_count(self) -> int:
        return len(self._svids)

    @property
    def jwt_svid_count(self) -> int:
        return len(self._jwts)

    @property
    def bundle(self) -> Bundle | None:
        return self._bundle

    @property
    def federated_bundles(self) -> Mapping[TrustDomain, Bundle]:
        return dict(self._federated)

    def _subscribed_entry_ids(self) -> set[str]:
        ids: set[str] = set()
        for sub in self._subscribers:
            ids.update(e.entry_id for e in self.matching_entries(sub.selectors))
        return ids

    def entries_needing_svid(self) -> list[WorkloadEntry]:
        """Entries with no X509-SVID, one past half-life or one chained to an authority the
        bundle flags tainted, within the cache bound.

        Past the bound only entries some subscriber matches get a new SVID (SPIRE's LRU cache).
        """
        now = self._clock.now()
        tainted = tainted_authorities(self._bundle)
        stale: list[WorkloadEntry] = []
        missing: list[WorkloadEntry] = []
        for entry in self._entries.values():
            svid = self._svids.get(entry.entry_id)
            if svid is None:
                missing.append(entry)
            elif now >= half_life(svid.leaf.not_valid_before_utc, svid.expires_at):
                stale.append(entry)
            elif tainted and chained_to(svid.chain, tainted):
                stale.append(entry)  # re-issued now, before the authority is revoked
        room = self._max_x509 - len(self._svids)
        if len(missing) > room:
            wanted = self._subscribed_entry_ids()
            subscribed = [e for e in missing if e.entry_id in wanted]
            others = [e for e in missing if e.entry_id not in wanted]
            missing = subscribed + others[: max(0, room - len(subscribed))]
        return stale + missing

    # ---- writes ----------------------------------------------------------------------------

    def set_entries(self, entries: Iterable[WorkloadEntry]) -> None:
        """Replace the entry set; SVIDs of removed entries or entries whose ID changed go."""
        new = {e.entry_id: e for e in entries}
        changed = new != self._entries
        for entry_id, old in self._entries.items():
            cur = new.get(entry_id)
            if cur is None or (cur.spiffe_id, cur.dns_names) != (old.spiffe_id, old.dns_names):
                self._svids.pop(entry_id, None)
                self._drop_jwts(entry_id)
        self._entries = new
        self._by_selector = {}
        for entry in new.values():
            for sel in entry.selectors:
                self._by_selector.setdefault(sel, set()).add(entry.entry_id)
        if changed:
            self._notify()

    def set_x509_svids(self, svids: Mapping[str, X509Svid]) -> None:
        """Store SVIDs by entry id (entries unknown by now are ignored), then enforce the bound."""
        stored = False
        for entry_id, svid in svids.items():
            entry = self._entries.get(entry_id)
            if entry is None or svid.spiffe_id != entry.spiffe_id:
                continue
            self._svids[entry_id] = svid
            self._svids.move_to_end(entry_id)
            stored = True
        self._evict_x509()
        if stored:
            self._notify()

    def _evict_x509(self) -> None:
        excess = len(self._svids) - self._max_x509
        if excess <= 0:
            return
        keep = self._subscribed_entry_ids()
        for entry_id in [i for i in self._svids if i not in keep][:excess]:
            del self._svids[entry_id]

    def set_bundle(self, bundle: Bundle) -> None:
        if bundle.trust_domain != self.trust_domain:
            raise ValueError(f"bundle is for {bundle.trust_domain}, not {self.trust_domain}")
        if self._bundle != bundle:
            self._bundle = bundle
            self._drop_tainted_jwts(bundle)
            self._bump(self.trust_domain)
            self._notify()

    def set_federated_bundles(self, bundles: Mapping[TrustDomain, Bundle]) -> None:
        new = {td: b for td, b in bundles.items() if td != self.trust_domain}
        if new == self._federated:
            return
        for td in set(new) | set(self._federated):
            if new.get(td) != self._federated.get(td):
                self._bump(td)
        self._federated = new
        self._notify()

    def _bump(self, td: TrustDomain) -> None:
        self._bundle_gen[td] = self._bundle_gen.get(td, 0) + 1

    # ---- JWT-SVIDs -------------------------------------------------------------------------

    def jwt_svid(self, entry_id: str, audience: Iterable[str]) -> JwtSvid | None:
        """A cached JWT-SVID for (entry, audience) that is not past half-life."""
        key = (entry_id, tuple(sorted(set(audience))))
        svid = self._jwts.get(key)
        if svid is None:
            return None
        issued = svid.issued_at or svid.expires_at
        if self._clock.now() >= half_life(issued, svid.expires_at):
            del self._jwts[key]
            return None
        self._jwts.move_to_end(key)
        return svid

    def set_jwt_svid(self, entry_id: str, audience: Iterable[str], svid: JwtSvid) -> None:
        if entry_id not in self._entries:
            return
        key = (entry_id, tuple(sorted(set(audience))))
        self._jwts[key] = svid
        self._jwts.move_to_end(key)
        while len(self._jwts) > self._max_jwt:
            self._jwts.popitem(last=False)

    def _drop_tainted_jwts(self, bundle: Bundle) -> None:
        """Forget cached JWT-SVIDs signed by a key the bundle now flags tainted."""
        tainted = {a.key_id for a in bundle.jwt_authorities if a.tainted}
        if tainted:
            for key in [k for k, svid in self._jwts.items() if jwt_key_id(svid.token) in tainted]:
                del self._jwts[key]

    def _drop_jwts(self, entry_id: str) -> None:
        for key in [k for k in self._jwts if k[0] == entry_id]:
            del self._jwts[key]
