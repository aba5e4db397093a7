"""``plastron-agent run``: attest (or resume), serve the Workload API and SDS, sync, rotate.

Start-up: a stored agent SVID that is still valid (and whose key the KeyManager still holds) is
resumed without attesting; otherwise the node attests over TLS verified against the bootstrap
bundle. Then every ``sync_interval`` (woken early when a workload waits for an SVID, and when the
server pushes that entries changed, agent/entry_push.py): rotate the
agent SVID if due, then sync entries, bundles and SVIDs (re-issuing the workload SVIDs chained
to an authority the bundle flags tainted), then rotate the agent SVID again if that bundle
tainted its authority. Errors back off; the cache keeps
serving what is still valid. AGENT_BANNED: the SVID is deleted and the agent exits. Other
agent-authorization failures (evicted, must re-attest, expired): re-attest, else exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.adminapi.endpoint import AdminSources, start_admin_endpoint
from plastron.agent.cache import WorkloadCache
from plastron.agent.config import AgentConfig
from plastron.agent.entry_push import EntryPushListener
from plastron.agent.identity import AgentIdentity, IdentitySources
from plastron.agent.metrics import RPC, SYNC_DURATION, SYNCS
from plastron.agent.plugin_loading import (
    build_key_manager,
    build_node_attestor,
    build_workload_attestors,
    check_agent_plugins,
    load_bootstrap_bundle,
)
from plastron.agent.sds.service import SecretDiscoveryService
from plastron.agent.server_client import TRANSPORT_ERRORS, ServerClient
from plastron.agent.storage import AgentStorage
from plastron.agent.sync import WorkloadSync, wait_or_wake
from plastron.agent.telemetry import AgentTelemetry
from plastron.agent.tpm_probe import SUBSYSTEM as TPM_SUBSYSTEM
from plastron.agent.tpm_probe import TpmProbe, agent_tctis
from plastron.agent.wire import REASONS, permission_denied_reason
from plastron.agent.workloadapi.endpoint import AgentHealth, start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.clock import Clock, SystemClock
from plastron.errors import AttestationFailed, PlastronError
from plastron.files import ensure_private_dir
from plastron.gcpause import LongLivedFreezer
from plastron.health_http import HealthHttpConfig, HealthHttpServer
from plastron.logs import configure_logging, fields
from plastron.transport.keepalive import Keepalive
from plastron.transport.server import RunningServer
from plastron.version import package_version

log = logging.getLogger("plastron.agent")
MIN_BACKOFF = 0.5
AGENT_VERSION = "plastron-0.1.0"


# Failures that a later attempt may not have: the server answered an error, or could not be
# reached, or the connection died under the call.
_ATTEST_ERRORS: tuple[type[Exception], ...] = (PlastronError, *TRANSPORT_ERRORS)
_SYNC_ERRORS: tuple[type[Exception], ...] = (GRPCError, *_ATTEST_ERRORS)


class AgentExit(Exception):
    """Stop the agent with this message and exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class AgentRuntime:
    def __init__(
        self, config: AgentConfig, join_token: str | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.keys = build_key_manager(config)
        self._join_token = join_token
        self.workload_attestors = build_workload_attestors(config)
        self.storage = AgentStorage(config.data_dir)
        td = config.trust_domain
        experimental = config.experimental
        keepalive = Keepalive(
            experimental.server_keepalive_time.total_seconds(),
            experimental.server_keepalive_timeout.total_seconds(),
        )
        self.client = ServerClient(config.server_address, config.server_port, td, keepalive)
        self.cache = WorkloadCache(
            td,
            self.clock,
            max_x509_svids=config.x509_svid_cache_max_size,
            max_jwt_svids=config.jwt_svid_cache_max_size,
        )
        self.identity = AgentIdentity(
            self.client,
            self.keys,
            self.storage,
            self.clock,
            IdentitySources(
                node_attestor=lambda: build_node_attestor(config, join_token),
                bootstrap_trust=lambda: load_bootstrap_bundle(config),
            ),
        )
        self.sync = WorkloadSync(
            self.client,
            self.cache,
            self.identity.update_bundle,
            self.clock,
            config.workload_x509_svid_key_type,
        )
        self.entries_changed = asyncio.Event()  # set by the server's push
        self.entry_push = EntryPushListener(
            self.client, self.entries_changed, config.experimental.sync_interval.total_seconds()
        )
        self.health = AgentHealth()
        self.telemetry = AgentTelemetry(config.telemetry)
        self.tpm_probe = self._build_tpm_probe()
        self.stop = asyncio.Event()
        # Installed while serving: full collections skip the cache and open streams (gcpause).
        self.gc_freezer = LongLivedFreezer()
        self._gc_settled = False

    def _build_tpm_probe(self) -> TpmProbe | None:
        """A probe of the TPM the agent's plugins use, when one does and something shows its
        outcome (/ready or /metrics)."""
        observed = self.config.health_checks.listener_enabled or self.config.telemetry.prometheus
        tctis = agent_tctis(self.config) if observed else []
        return TpmProbe(tctis) if tctis else None

    # ---- identity ----------------------------------------------------------------------------

    async def _establish(self) -> None:
        try:
            await self.identity.establish()
        except GRPCError as exc:
            raise AgentExit(f"node attestation failed: {exc.status.name}: {exc.message}") from exc
        except _ATTEST_ERRORS as exc:
            raise AgentExit(f"node attestation failed: {exc}") from exc
        bundle = self.identity.bundle()
        assert bundle is not None  # established: resumed or attested
        self.cache.set_bundle(bundle)
        try:
            self.client.channel()  # builds the mTLS context now: a key TLS cannot use ends here
        except (PlastronError, OSError) as exc:
            raise AgentExit(f"cannot use the agent SVID for TLS: {exc}") from exc

    # ---- loop --------------------------------------------------------------------------------

    async def _on_denied(self, exc: GRPCError) -> None:
        reason = permission_denied_reason(exc)
        if reason == REASONS.AGENT_BANNED:
            self.identity.forget()
            raise AgentExit(f"agent is banned: {exc.message}; its SVID was deleted")
        if reason is None:
            log.warning("server refused a call status=PERMISSION_DENIED message=%s", exc.message)
            return
        log.warning("agent must attest again reason=%s", REASONS.Reason.Name(reason))
        try:
            await self.identity.reattest()
        except (GRPCError, PlastronError, OSError) as err:
            self.identity.forget()
            raise AgentExit(f"re-attestation failed ({err}); agent SVID deleted") from err

    async def _step(self) -> None:
        started = time.perf_counter()
        outcome = "error"
        try:
            await self._sync_round()
            outcome = "success"
            self._freeze_long_lived()
        finally:
            SYNCS.labels(outcome).inc()
            SYNC_DURATION.labels(outcome).observe(time.perf_counter() - started)

    def _freeze_long_lived(self) -> None:
        """After the first successful sync the cache is built: freeze it now, rather than in
        the first automatic full collection; later, thaw (one full pause) only when due."""
        if not self._gc_settled:
            self.gc_freezer.settle()
            self._gc_settled = True
        else:
            self.gc_freezer.thaw_if_due()

    async def _sync_round(self) -> None:
        try:
            await self.identity.rotate_if_due()
            await self.sync.sync_once()
            # A bundle that just flagged our authority tainted: move off it in this round.
            await self.identity.rotate_if_due()
        except GRPCError as exc:
            if exc.status == Status.PERMISSION_DENIED:
                await self._on_denied(exc)
            raise

    async def _loop(self) -> None:
        interval = self.config.experimental.sync_interval.total_seconds()
        backoff = MIN_BACKOFF
        with contextlib.suppress(GRPCError, PlastronError, OSError):
            await self.client.post_status(0, AGENT_VERSION)
        while not self.stop.is_set():
            delay = interval
            self.entries_changed.clear()  # a push from here on asks for one more round
            try:
                await self._step()
                backoff = MIN_BACKOFF
            except AgentExit:
                raise
            except Exception as exc:  # a failed sync never stops the workloads' SVIDs
                expected = isinstance(exc, _SYNC_ERRORS)  # else a bug: log where it came from
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "sync failed; serving from cache error=%s",
                    exc,
                    exc_info=not expected,
                )
                delay = min(backoff, interval)
                backoff = min(backoff * 2, interval)
            waits = [
                asyncio.create_task(self.stop.wait()),
                asyncio.create_task(wait_or_wake(self.cache.svid_wanted, delay)),
                asyncio.create_task(self.entries_changed.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "agent starting",
            extra=fields(
                version=package_version(),
                trust_domain=self.config.trust_domain,
                server=f"{self.config.server_address}:{self.config.server_port}",
                plugins=[f"{p.type}:{p.name}" for p in self.config.plugins if p.enabled],
                data_dir=self.config.data_dir,
            ),
        )
        await self._establish()
        service = WorkloadAPIService(
            self.cache, self.workload_attestors, self.clock, jwt_source=self.sync
        )
        probing = await self._start_tpm_probe()
        self.telemetry.start(self.identity, self.cache, self.clock, self._subsystems)
        server = await self._start_workload_endpoint(service)
        admin = await self._start_admin_socket(service)
        health_http = await self._start_health_listener()
        push = None
        if self.config.experimental.entry_push:
            push = asyncio.create_task(self.entry_push.run(), name="entry-push")
        self.gc_freezer.install()
        try:
            await self._loop()
        finally:
            self.gc_freezer.uninstall()
            if push is not None:
                push.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await push
            if health_http is not None:
                await health_http.close()
            if admin is not None:
                await admin.close()
            await server.close()
            self.client.close()
            self.telemetry.close()
            if probing is not None:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing
        log.info("agent stopped")
        return 0

    async def _start_workload_endpoint(self, service: WorkloadAPIService) -> RunningServer:
        """The Workload API (and Envoy SDS unless disabled) and health on the agent's socket."""
        handlers: list[Any] = [service, self.health]
        if not self.config.disable_sds_api:
            handlers.append(
                SecretDiscoveryService(self.cache, service.attestation, self.config.sds)
            )
        server = await start_endpoint(
            str(self.config.socket_path),
            [RPC.instrument(handler) for handler in handlers],
            service.callers,
            connections=self.config.grpc_limits,
        )
        log.info(
            "workload API%s listening socket_path=%s",
            "" if self.config.disable_sds_api else " and Envoy SDS",
            self.config.socket_path,
        )
        return server

    async def _start_admin_socket(self, service: WorkloadAPIService) -> RunningServer | None:
        sources = AdminSources(
            cache=self.cache,
            attestors=self.workload_attestors,
            agent_chain=lambda: self.identity.state.svid_chain if self.identity.state else (),
            last_sync_success=lambda: self.sync.last_success,
            jwt_svid=service.jwt_svid,
        )
        admin = await start_admin_endpoint(self.config, sources, RPC.instrument)
        if admin is not None:
            log.info("admin API listening admin_socket_path=%s", self.config.admin_socket_path)
        return admin

    async def _start_tpm_probe(self) -> asyncio.Task[None] | None:
        """Probe once now (so /ready and /metrics start from a real answer), then every
        interval in the background."""
        if self.tpm_probe is None:
            return None
        await self.tpm_probe.probe_once()
        return asyncio.create_task(self.tpm_probe.run(self.stop), name="tpm-probe")

    async def _health_statuses(self) -> dict[str, tuple[bool, str]]:
        """Ready while every subsystem is; the last successful sync is reported but a down
        server does not make the agent unready (it keeps serving cached SVIDs, as SPIRE's
        agent does)."""
        now = self.clock.now()
        last = self.sync.last_success
        sync_detail = "never" if last is None else f"{now.timestamp() - last:.0f}s ago"
        return {**self._subsystems(), "last_sync_success": (True, sync_detail)}

    def _subsystems(self) -> dict[str, tuple[bool, str]]:
        """The Workload API serves, the agent holds a valid SVID, and (when the agent uses a
        TPM) the TPM answered its last probe. Also read by the metrics scrape thread."""
        now = self.clock.now()
        svid_ok, svid_detail = False, "no agent SVID"
        if self.identity.state is not None:
            leaf = self.identity.state.svid_chain[0]
            svid_ok = leaf.not_valid_after_utc > now
            svid_detail = f"expires {leaf.not_valid_after_utc.isoformat()}"
        out = {"workload_api": (True, ""), "agent_svid": (svid_ok, svid_detail)}
        if self.tpm_probe is not None:
            out[TPM_SUBSYSTEM] = self.tpm_probe.status
        return out

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("agent stopping", extra=fields(signal=sig.name))
        self.stop.set()

    async def _start_health_listener(self) -> HealthHttpServer | None:
        hc = self.config.health_checks
        if not hc.listener_enabled:
            return None
        server = HealthHttpServer(
            HealthHttpConfig(hc.bind_address, hc.bind_port, hc.live_path, hc.ready_path),
            self._health_statuses,
        )
        await server.start()
        return server


async def run_agent(config: AgentConfig, *, join_token: str | None = None) -> int:
    configure_logging(config.log_level, config.log_format, config.log_file)
    try:
        check_agent_plugins(config)  # a missing extra fails here, before data_dir is made
        ensure_private_dir(config.data_dir, "data_dir")  # the agent's key and SVID live there
        return await AgentRuntime(config, join_token).run()
    except AgentExit as exc:
        log.error("agent stopping: %s", exc)
        sys.stderr.write(f"Error: {exc}\n")
        return exc.code
    except AttestationFailed as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
