"""``plastron-agent run``: attest (or resume), serve the Workload API, sync, rotate.

Start-up: a stored agent SVID that is still valid (and whose key the KeyManager still holds) is
resumed without attesting; otherwise the node attests over TLS verified against the bootstrap
bundle. Then every ``sync_interval`` (woken early when a workload waits for an SVID): rotate the
agent SVID if due, then sync entries, bundles and SVIDs. Errors back off; the cache keeps
serving what is still valid. AGENT_BANNED: the SVID is deleted and the agent exits. Other
agent-authorization failures (evicted, must re-attest, expired): re-attest, else exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.attestation import attest_node
from plastron.agent.cache import WorkloadCache
from plastron.agent.plugin_loading import (
    build_key_manager,
    build_node_attestor,
    build_workload_attestors,
    load_bootstrap_bundle,
)
from plastron.agent.server_client import TRANSPORT_ERRORS, ServerClient
from plastron.agent.storage import AgentState, AgentStorage
from plastron.agent.svid_rotator import KEY_SLOTS, AgentSvidRotator, other_slot
from plastron.agent.sync import WorkloadSync, wait_or_wake
from plastron.agent.wire import REASONS, permission_denied_reason
from plastron.agent.workloadapi.endpoint import AgentHealth, start_endpoint
from plastron.agent.workloadapi.service import WorkloadAPIService
from plastron.clock import Clock, SystemClock
from plastron.config import AgentConfig
from plastron.errors import AttestationFailed, PlastronError
from plastron.health_http import HealthHttpConfig, HealthHttpServer
from plastron.keymanager import prove_possession

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
        self.client = ServerClient(config.server_address, config.server_port, td)
        self.cache = WorkloadCache(
            td,
            self.clock,
            max_x509_svids=config.x509_svid_cache_max_size,
            max_jwt_svids=config.jwt_svid_cache_max_size,
        )
        self.rotator = AgentSvidRotator(
            self.client, self.keys, self.storage, self.clock, self._reattest
        )
        self.sync = WorkloadSync(
            self.client,
            self.cache,
            self.rotator.update_bundle,
            self.clock,
            config.workload_x509_svid_key_type,
        )
        self.health = AgentHealth()
        self.stop = asyncio.Event()

    # ---- identity ----------------------------------------------------------------------------

    def _resumable(self) -> AgentState | None:
        state = self.storage.load()
        if state is None:
            return None
        if state.expires_at <= self.clock.now():
            log.info("stored agent SVID has expired; attesting again")
            return None
        try:
            public = self.keys.get_public_key(state.key_id)
        except PlastronError:
            log.warning("stored agent SVID's key %s is gone; attesting again", state.key_id)
            return None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if public.public_bytes(der, spki) != state.svid_chain[0].public_key().public_bytes(
            der, spki
        ):
            log.warning("stored agent SVID does not match key %s; attesting again", state.key_id)
            return None
        try:
            # A TPM-wrapped key copied from another machine has the right public key but does
            # not load here: such a data_dir must not resume that node's identity.
            prove_possession(self.keys.signer(state.key_id), public)
        except PlastronError as exc:
            log.warning(
                "stored agent SVID's key %s cannot sign here (%s); attesting again",
                state.key_id,
                exc,
            )
            return None
        return state

    async def _attest(self, trust: list[x509.Certificate] | None = None) -> AgentState:
        current = self.rotator.state
        key_id = other_slot(current.key_id) if current else KEY_SLOTS[0]
        if trust is None:
            trust = load_bootstrap_bundle(self.config)
        self.client.set_trust(trust)
        # Built only when needed: a resumed agent does not need its (spent) join token.
        attestor = build_node_attestor(self.config, self._join_token)
        attested = await attest_node(self.client, attestor, self.keys, key_id, self.clock)
        state = AgentState(attested.svid.chain, key_id, attested.bundle, attested.reattestable)
        self.storage.save(state)
        return state

    async def _reattest(self) -> AgentState:
        state = self.rotator.state
        trust = list(state.bundle.x509_certificates()) if state else None
        return await self._attest(trust)

    async def _establish(self) -> None:
        state = self._resumable()
        if state is not None:
            log.info("resuming with stored agent SVID (no attestation)")
        else:
            try:
                state = await self._attest()
            except GRPCError as exc:
                raise AgentExit(
                    f"node attestation failed: {exc.status.name}: {exc.message}"
                ) from exc
            except _ATTEST_ERRORS as exc:
                raise AgentExit(f"node attestation failed: {exc}") from exc
        self.rotator.adopt(state)
        self.cache.set_bundle(state.bundle)
        try:
            self.client.channel()  # builds the mTLS context now: a key TLS cannot use ends here
        except (PlastronError, OSError) as exc:
            raise AgentExit(f"cannot use the agent SVID for TLS: {exc}") from exc

    # ---- loop --------------------------------------------------------------------------------

    async def _on_denied(self, exc: GRPCError) -> None:
        reason = permission_denied_reason(exc)
        if reason == REASONS.AGENT_BANNED:
            self.storage.delete_svid()
            raise AgentExit(f"agent is banned: {exc.message}; its SVID was deleted")
        if reason is None:
            log.warning("server refused a call status=PERMISSION_DENIED message=%s", exc.message)
            return
        log.warning("agent must attest again reason=%s", REASONS.Reason.Name(reason))
        try:
            self.rotator.adopt(await self._reattest())
        except (GRPCError, PlastronError, OSError) as err:
            self.storage.delete_svid()
            raise AgentExit(f"re-attestation failed ({err}); agent SVID deleted") from err

    async def _step(self) -> None:
        try:
            await self.rotator.rotate_if_due()
            await self.sync.sync_once()
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
            try:
                await self._step()
                backoff = MIN_BACKOFF
            except AgentExit:
                raise
            except Exception as exc:  # a failed sync never stops the workloads' SVIDs
                expected = isinstance(exc, _SYNC_ERRORS)  # else a bug: log where it came from
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "sync failed; serving from cache error=%r",
                    exc,
                    exc_info=not expected,
                )
                delay = min(backoff, interval)
                backoff = min(backoff * 2, interval)
            waits = [
                asyncio.create_task(self.stop.wait()),
                asyncio.create_task(wait_or_wake(self.cache.svid_wanted, delay)),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        await self._establish()
        service = WorkloadAPIService(
            self.cache, self.workload_attestors, self.clock, jwt_source=self.sync
        )
        server = await start_endpoint(str(self.config.socket_path), [service, self.health])
        log.info("workload API listening socket_path=%s", self.config.socket_path)
        health_http = await self._start_health_listener()
        try:
            await self._loop()
        finally:
            if health_http is not None:
                await health_http.close()
            server.close()
            await server.wait_closed()
            self.client.close()
        return 0

    async def _health_statuses(self) -> dict[str, tuple[bool, str]]:
        """Ready while the Workload API serves and the agent holds a valid SVID; the last
        successful sync is reported but a down server does not make the agent unready (it
        keeps serving cached SVIDs, as SPIRE's agent does)."""
        now = self.clock.now()
        svid_ok, svid_detail = False, "no agent SVID"
        if self.rotator.state is not None:
            leaf = self.rotator.state.svid_chain[0]
            svid_ok = leaf.not_valid_after_utc > now
            svid_detail = f"expires {leaf.not_valid_after_utc.isoformat()}"
        last = self.sync.last_success
        sync_detail = "never" if last is None else f"{now.timestamp() - last:.0f}s ago"
        return {
            "workload_api": (True, ""),
            "agent_svid": (svid_ok, svid_detail),
            "last_sync_success": (True, sync_detail),
        }

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
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("hpack", "h2", "grpclib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return await AgentRuntime(config, join_token).run()
    except AgentExit as exc:
        log.error("agent stopping: %s", exc)
        sys.stderr.write(f"Error: {exc}\n")
        return exc.code
    except AttestationFailed as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
