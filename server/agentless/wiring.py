"""The token exchange as the server runtime starts it: the exchange itself (shared by the
HTTPS listener and the gRPC service) and its listener, from the server's config."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from plastron.attestors.base import ServerNodeAttestor
from plastron.clock import Clock
from plastron.datastore import DataStore
from plastron.server.agentless.discovery import OidcDocuments
from plastron.server.agentless.exchange import TokenExchange
from plastron.server.agentless.http import ExchangeListener, SvidSource
from plastron.server.agentless.limits import SourceRateLimit
from plastron.server.ca.server_ca import ServerCA
from plastron.server.config import ServerConfig
from plastron.spiffe.bundle import Bundle


def build_exchange_listener(
    config: ServerConfig,
    *,
    attestors: Mapping[str, ServerNodeAttestor],
    datastore: DataStore,
    ca: Callable[[], ServerCA | None],
    bundle: Callable[[], Bundle | None],
    clock: Clock,
    svid: SvidSource,
) -> ExchangeListener | None:
    """None unless ``server.agentless_exchange`` is configured; not started yet."""
    cfg = config.agentless_exchange
    if cfg is None:
        return None
    exchange = TokenExchange(
        trust_domain=config.trust_domain,
        attestors=attestors,
        datastore=datastore,
        ca=ca,
        bundle=bundle,
        clock=clock,
        rate_limit=SourceRateLimit(cfg.rate_limit_per_second, cfg.rate_limit_burst),
    )
    issuer = config.jwt_issuer
    discovery = OidcDocuments(issuer, bundle, clock) if issuer else None
    return ExchangeListener(cfg, exchange, svid, discovery)
