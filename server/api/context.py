"""What every API service needs from the running server, in one typed bundle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plastron.attestors.base import ServerNodeAttestor
from plastron.clock import Clock
from plastron.datastore import DataStore
from plastron.server.api.ratelimit import ATTEST_PER_SECOND, SIGN_PER_SECOND, RateLimiter
from plastron.server.ca.server_ca import ServerCA
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.server.entrywatchers import EntryWatchers
from plastron.server.federation.manager import FederationManager
from plastron.spiffe.ids import TrustDomain


async def _nothing() -> None:
    return None


@dataclass
class ApiContext:
    trust_domain: TrustDomain
    datastore: DataStore
    ca: ServerCA
    cache: AuthorizedEntryCache
    clock: Clock
    attestors: dict[str, ServerNodeAttestor]
    challenge_timeout: float = 30.0
    # Agent SVID lifetime (seconds) for methods whose agents are not unique machines.
    non_unique_agent_ttl: int = 3600
    attest_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(ATTEST_PER_SECOND))
    sign_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(SIGN_PER_SECOND))
    started_at: float = 0.0
    # Awaited after a write: the local entry cache applies it before the call returns, so a
    # caller sees its own writes (other servers catch up within one poll).
    on_change: Callable[[], Awaitable[None]] = _nothing
    # Awaited after an operator changed the authorities (taint, revoke): the server re-reads
    # its trust bundle and moves its own SVID off a tainted authority before the call returns.
    on_authorities_change: Callable[[], Awaitable[None]] = _nothing
    # Keeps foreign bundles fresh; the TrustDomain API's RefreshBundle asks it to fetch now.
    federation: FederationManager | None = None
    # The agents' EntryNotifier/Watch streams (None: the service answers UNIMPLEMENTED).
    entry_watchers: EntryWatchers | None = None

    def now_unix(self) -> int:
        return int(self.clock.now().timestamp())
