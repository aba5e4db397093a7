"""The running server: datastore, KeyManager, CA, entry cache, API listeners, background loops.

``PlastronServer.start()`` brings everything up in dependency order and fails with one clear
PlastronError if any part cannot start (bad PIN, unreachable database…); ``stop()`` undoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.encoding.proto import ProtoStatusDetailsCodec

from plastron.attestors.base import ServerNodeAttestor, attests_unique_nodes
from plastron.clock import Clock, SystemClock, from_unix
from plastron.configs.plugin_blocks import PluginConfig
from plastron.datastore import DataStore
from plastron.files import ensure_private_dir
from plastron.health_http import HealthHttpConfig, HealthHttpServer
from plastron.host_services import ConsumedToken, HostServices
from plastron.keymanager import KeyManager, PrivateKey, close_if_closeable
from plastron.logs import fields
from plastron.plugins import PluginContext, Registries
from plastron.server.agentless.grpc_service import TokenExchangeService
from plastron.server.agentless.http import ExchangeListener
from plastron.server.agentless.wiring import build_exchange_listener
from plastron.server.api.authz import AuthorizedService, Authorizer, authorized_mapping
from plastron.server.api.context import ApiContext
from plastron.server.api.policies import POLICIES
from plastron.server.api.ratelimit import ATTEST_PER_SECOND, SIGN_PER_SECOND, RateLimiter
from plastron.server.ca.config import ca_config
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import DataStoreCAStore
from plastron.server.ca.upstream_sync import follow_upstream
from plastron.server.config import ServerConfig
from plastron.server.entrycache import AuthorizedEntryCache
from plastron.server.entrywatchers import EntryWatchers
from plastron.server.federation.endpoint import BundleEndpointServer
from plastron.server.federation.manager import FederationManager
from plastron.server.health import HealthChecker
from plastron.server.metrics import RPC
from plastron.server.plugin_loading import (
    build_datastore,
    build_node_attestors,
    build_upstream,
    load_server_plugins,
    plugin_context,
)
from plastron.server.pruning import Pruned, prune_expired, prune_expired_agents
from plastron.server.services import build_services, server_grpc_limits
from plastron.server.task_failures import FailureReporter
from plastron.server.telemetry import ServerTelemetry
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.taint import chained_to, tainted_authorities
from plastron.transport.server import RunningServer, start_server
from plastron.transport.tls import RotatingServerTls
from plastron.upstream import UpstreamAuthority, UpstreamBundleSource
from plastron.version import package_version

log = logging.getLogger(__name__)

CACHE_REBUILD_SECONDS = 3600.0
BUNDLE_POLL_SECONDS = 5.0
UPSTREAM_POLL_SECONDS = 5.0  # how often a nested server reads its upstream's bundle (SPIRE)
PRUNE_SECONDS = 300.0
HEALTH_POLL_SECONDS = 10.0


class PlastronServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Clock | None = None,
        ca_worker_processes: int | None = None,
        registries: Registries | None = None,
    ) -> None:
        """``ca_worker_processes``: the CA's batch workers; None: by the machine's cores.
        ``registries``: the plugins to build from (None: the server's own modules)."""
        self.config = config
        self.clock = clock or SystemClock()
        self._ca_worker_processes = ca_worker_processes
        self._registries = registries
        self.datastore: DataStore | None = None
        self.key_manager: KeyManager | None = None
        self.ca: ServerCA | None = None
        self.cache: AuthorizedEntryCache | None = None
        self.health = HealthChecker()
        self.api: ApiContext | None = None
        self.health_http: HealthHttpServer | None = None
        self.listeners: RunningServer | None = None
        self._tls: RotatingServerTls | None = None
        self._trust: tuple[x509.Certificate, ...] = ()
        self._tainted: tuple[x509.Certificate, ...] = ()  # authorities of _trust to move off
        self._server_chain: list[x509.Certificate] = []
        self._server_key: PrivateKey | None = None
        self._own_bundle: Bundle | None = None
        self.bundle_endpoint: BundleEndpointServer | None = None
        self.token_exchange: ExchangeListener | None = None
        self.federation: FederationManager | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cache_dirty = asyncio.Event()
        self.telemetry = ServerTelemetry(config.telemetry)

    # ---- start / stop ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        registries = load_server_plugins() if self._registries is None else self._registries
        ensure_private_dir(cfg.data_dir, "data_dir")
        context = plugin_context(
            cfg,
            registries,
            clock=self.clock,
            services=HostServices(
                x509_authorities=self._x509_authorities,
                consume_join_token=self._consume_join_token,
                agent_attested=self._agent_attested,
            ),
        )
        self.datastore = await build_datastore(cfg, registries, context)
        try:
            await self._start_rest(registries, context)
        except BaseException:
            await self.stop()
            raise

    async def _start_rest(self, registries: Registries, context: PluginContext) -> None:
        cfg = self.config
        upstream = build_upstream(cfg, registries, context)
        await self._open_ca_and_cache(registries, context, upstream)
        if cfg.audit_log_enabled:  # audit lines are INFO: kept whatever log_level says
            logging.getLogger("plastron.audit").setLevel(logging.INFO)
        attestors = build_node_attestors(cfg, registries, context)
        await self._start_listeners(attestors)
        await self._start_loops(upstream)
        assert self.listeners is not None
        log.info(
            "server started",
            extra=fields(
                version=package_version(),
                trust_domain=cfg.trust_domain,
                plugins=[f"{p.type}:{p.name}" for p in cfg.plugins if p.enabled],
                tcp=":".join(map(str, self.listeners.tcp_address or ())),
                socket=cfg.socket_path,
                audit_log=cfg.audit_log_enabled,
            ),
        )

    async def _open_ca_and_cache(
        self, registries: Registries, context: PluginContext, upstream: UpstreamAuthority | None
    ) -> None:
        """The KeyManager, the CA (its journal loaded), the entry cache, the trust bundle and
        the server's own SVID: what every listener needs before it serves."""
        cfg = self.config
        assert self.datastore is not None
        # no KeyManager block: the disk one with its defaults (keys in <data_dir>/keys)
        km_plugin = cfg.key_manager or PluginConfig("KeyManager", "disk")
        self.key_manager = registries.key_managers.create(km_plugin, context)
        self.ca = await ServerCA.open(
            config=ca_config(cfg, self._ca_worker_processes),
            key_manager=self.key_manager,
            store=DataStoreCAStore(self.datastore),
            clock=self.clock,
            upstream=upstream,
        )
        self.cache = AuthorizedEntryCache(cfg.trust_domain, self.datastore, self.clock)
        await self.cache.rebuild()
        await self._refresh_trust()
        await self._renew_server_svid()

    async def _start_listeners(self, attestors: dict[str, ServerNodeAttestor]) -> None:
        """The server API (TCP and admin socket), the health, bundle-endpoint and
        token-exchange listeners, each behind the same authorization and instrumentation."""
        cfg = self.config
        assert self.datastore is not None and self.cache is not None
        self.federation = FederationManager(
            cfg.trust_domain,
            self.datastore,
            cfg.federation.federates_with,
            own_trust=lambda: self._trust,
        )
        ctx = self.api = self._api_context(attestors)
        self._register_health()
        authorizer = Authorizer(
            admin_ids=cfg.admin_ids,
            cache=self.cache,
            nodes=self.datastore,
            clock_now=lambda: self.clock.now().timestamp(),
        )
        self.token_exchange = build_exchange_listener(
            cfg,
            attestors=attestors,
            datastore=self.datastore,
            ca=lambda: self.ca,
            bundle=lambda: self._own_bundle,
            clock=self.clock,
            svid=self._server_svid,
        )
        services = build_services(ctx, self.health, lambda: self._server_chain)
        if self.token_exchange is not None:
            services.append(TokenExchangeService(self.token_exchange.exchange))
        handlers = [
            RPC.instrument(
                AuthorizedService(
                    authorized_mapping(service, POLICIES, authorizer, audit=cfg.audit_log_enabled)
                )
            )
            for service in services
        ]
        assert self._tls is not None
        self.listeners = await start_server(
            handlers,
            tcp=(cfg.bind_address, cfg.bind_port),
            uds_path=str(cfg.socket_path),
            ssl=self._tls.context(),
            status_details_codec=ProtoStatusDetailsCodec(),
            limits=server_grpc_limits(cfg.grpc_limits),
        )
        await self._start_health_listener()
        await self._start_bundle_endpoint()
        if self.token_exchange is not None:
            await self.token_exchange.start()

    async def _start_loops(self, upstream: UpstreamAuthority | None) -> None:
        assert self.federation is not None
        self._spawn(self.federation.run(), "federation")
        self.telemetry.start(lambda: self.ca, self.health, self.clock)
        if self.telemetry.enabled:  # keeps plastron_server_subsystem_up current
            await self._check_health()
            self._spawn(self._loop(self._check_health, HEALTH_POLL_SECONDS), "health-poll")
        self._spawn(self._loop(self._rotate_ca, 10.0), "ca-rotator")
        if isinstance(upstream, UpstreamBundleSource):
            self._spawn(self._follow_upstream_loop(upstream), "upstream-bundle")
        self._spawn(self._cache_loop(), "entry-cache")
        self._spawn(self._loop(self._refresh_trust, BUNDLE_POLL_SECONDS), "bundle-poll")
        self._spawn(self._loop(self._maybe_renew_server_svid, 5.0), "server-svid")
        self._spawn(self._loop(self.prune, PRUNE_SECONDS), "prune")

    async def _start_health_listener(self) -> None:
        hc = self.config.health_checks
        if not hc.listener_enabled:
            return

        async def statuses() -> dict[str, tuple[bool, str]]:
            return {s.name: (s.healthy, s.detail) for s in await self.health.statuses()}

        self.health_http = HealthHttpServer(
            HealthHttpConfig(hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path), statuses
        )
        await self.health_http.start()

    async def _start_bundle_endpoint(self) -> None:
        cfg = self.config.federation.bundle_endpoint
        if cfg is None:
            return
        self.bundle_endpoint = BundleEndpointServer(
            cfg, lambda: self._own_bundle, self._server_svid, self.config.config_dir
        )
        await self.bundle_endpoint.start()

    def _server_svid(self) -> tuple[list[x509.Certificate], PrivateKey]:
        assert self._server_key is not None
        return self._server_chain, self._server_key

    async def stop(self) -> None:
        self._stop.set()
        if self.bundle_endpoint is not None:
            await self.bundle_endpoint.close()
            self.bundle_endpoint = None
        self.telemetry.close()
        if self.token_exchange is not None:
            await self.token_exchange.close()
            self.token_exchange = None
        if self.health_http is not None:
            await self.health_http.close()
            self.health_http = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.listeners is not None:
            await self.listeners.close()
            self.listeners = None
        if self.ca is not None:
            self.ca.close()
            self.ca = None
        if self.datastore is not None:
            await self.datastore.close()
            self.datastore = None
        close_if_closeable(self.key_manager)
        log.info("server stopped")

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        if sig is not None:
            log.info("server stopping", extra=fields(signal=sig.name))
        self._stop.set()

    # ---- parts ----------------------------------------------------------------------------

    async def _consume_join_token(self, token: str) -> ConsumedToken | None:
        assert self.datastore is not None
        row = await self.datastore.consume_join_token(token)
        return None if row is None else ConsumedToken(row.token, from_unix(row.expires_at))

    async def _agent_attested(self, agent_id: SpiffeId) -> bool:
        assert self.datastore is not None
        return await self.datastore.fetch_attested_node(agent_id) is not None

    def _api_context(self, attestors: dict[str, ServerNodeAttestor]) -> ApiContext:
        assert self.datastore is not None and self.ca is not None and self.cache is not None
        rl = self.config.ratelimit
        return ApiContext(
            trust_domain=self.config.trust_domain,
            datastore=self.datastore,
            ca=self.ca,
            cache=self.cache,
            clock=self.clock,
            attestors=attestors,
            challenge_timeout=self.config.experimental.challenge_timeout.total_seconds(),
            non_unique_agent_ttl=int(self.config.non_unique_agent_ttl.total_seconds()),
            attest_limiter=RateLimiter(ATTEST_PER_SECOND, enabled=rl.attestation),
            sign_limiter=RateLimiter(SIGN_PER_SECOND, enabled=rl.signing),
            started_at=time.monotonic(),
            on_change=self._apply_local_change,
            on_authorities_change=self._apply_authorities_change,
            federation=self.federation,
            entry_watchers=EntryWatchers(self.cache),
        )

    def _register_health(self) -> None:
        assert self.datastore is not None and self.ca is not None
        datastore, ca = self.datastore, self.ca
        self.health.add("datastore", datastore.health_check)
        self.health.add("ca", ca.health_check)

    async def _check_health(self) -> None:
        await self.health.statuses()

    async def _rotate_ca(self) -> None:
        assert self.ca is not None
        await self.ca.rotator.rotate()
        await self._refresh_trust()

    async def _follow_upstream_loop(self, source: UpstreamBundleSource) -> None:
        async def follow_upstream_bundle() -> None:
            assert self.ca is not None
            await follow_upstream(self.ca.manager, source)
            await self._refresh_trust()

        await self._loop(follow_upstream_bundle, UPSTREAM_POLL_SECONDS)

    async def _x509_authorities(self) -> tuple[x509.Certificate, ...]:
        return self._trust

    async def _refresh_trust(self) -> None:
        assert self.datastore is not None
        data = await self.datastore.fetch_bundle(self.config.trust_domain)
        if data is not None:
            bundle = Bundle.from_json(data)
            self._own_bundle = bundle
            self._trust = tuple(bundle.x509_certificates())
            self._tainted = tainted_authorities(bundle)

    async def _renew_server_svid(self) -> None:
        assert self.ca is not None
        key = ec.generate_private_key(ec.SECP256R1())
        chain = await self.ca.sign_server_x509_svid(public_key=key.public_key())
        self._server_chain, self._server_key = chain, key
        if self._tls is None:
            self._tls = RotatingServerTls(chain, key, lambda: self._trust)
        else:
            self._tls.set_svid(chain, key)

    async def _apply_authorities_change(self) -> None:
        await self._refresh_trust()
        await self._maybe_renew_server_svid()

    async def _maybe_renew_server_svid(self) -> None:
        leaf = self._server_chain[0]
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        if self.clock.now() >= leaf.not_valid_before_utc + lifetime / 2:
            await self._renew_server_svid()
        elif chained_to(self._server_chain, self._tainted):
            log.info("server SVID chains to a tainted authority; renewing")
            await self._renew_server_svid()
        elif self._trust and not chained_to(self._server_chain, self._trust):
            # Revoked before we moved off it (taint and revoke within one poll).
            log.info("server SVID chains to no authority of the bundle; renewing")
            await self._renew_server_svid()

    async def prune(self) -> Pruned:
        """One pass of the prune loop (expired tokens and entries, old events and journals)."""
        assert self.datastore is not None
        pruned = await prune_expired(self.datastore, self.clock.now())
        if pruned != Pruned(0, 0, 0, 0):
            log.debug(
                "pruned join_tokens=%d entries=%d events=%d ca_journals=%d "
                "exchanged_credentials=%d",
                pruned.join_tokens, pruned.entries, pruned.events, pruned.ca_journals,
                pruned.exchanged_credentials,
            )  # fmt: skip
        pruned_nodes = await self.prune_non_unique_nodes()
        if pruned_nodes:
            log.info("pruned expired non-unique agents count=%d", pruned_nodes)
        expired = await prune_expired_agents(
            self.datastore, self.clock.now(), self.config.node_pruning
        )
        if expired:
            log.info("pruned agents expired for longer than configured count=%d", expired)
            await self._apply_local_change()
        return pruned

    async def prune_non_unique_nodes(self) -> int:
        """Delete the node rows of non-unique methods (aws_iam) whose SVID has expired: each
        attestation made a new agent ID, so an expired one is never used again."""
        assert self.datastore is not None and self.api is not None
        types = sorted(n for n, a in self.api.attestors.items() if not attests_unique_nodes(a))
        if not types:
            return 0
        now = int(self.clock.now().timestamp())
        pruned = await self.datastore.prune_attested_nodes(now, types)
        if pruned:
            await self._apply_local_change()
        return pruned

    async def _apply_local_change(self) -> None:
        assert self.cache is not None
        try:
            await self.cache.refresh()
        except Exception as exc:  # the poll loop retries; the write itself succeeded
            log.warning("entry cache refresh after a write failed error=%s", exc)
            self._cache_dirty.set()

    async def _cache_loop(self) -> None:
        assert self.cache is not None
        last_rebuild = time.monotonic()
        failures = FailureReporter("entry-cache", log)
        poll = self.config.experimental.cache_reload_interval.total_seconds()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cache_dirty.wait(), poll)
            self._cache_dirty.clear()
            try:
                if time.monotonic() - last_rebuild > CACHE_REBUILD_SECONDS:
                    await self.cache.rebuild()
                    last_rebuild = time.monotonic()
                else:
                    await self.cache.refresh()
            except Exception as exc:  # any failure: report it, retry at the next poll
                failures.failed(exc)
            else:
                failures.succeeded()

    async def _loop(self, fn: Callable[[], Awaitable[object]], seconds: float) -> None:
        failures = FailureReporter(fn.__name__.lstrip("_"), log)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            if self._stop.is_set():
                return
            try:
                await fn()
            except Exception as exc:  # any failure: report it, retry at the next period
                failures.failed(exc)
            else:
                failures.succeeded()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))
