"""The agent's TPM health probe: the ``tpm`` subsystem of ``/ready`` and of
``plastron_agent_subsystem_up``.

An agent whose NodeAttestor is ``tpm`` or ``tpm_devid``, or whose KeyManager is ``tpm``, needs
its TPM to attest again and to sign (its SVID key, its TLS handshakes). Every ``PROBE_INTERVAL``
seconds (the server's health poll) each TPM it uses is asked for a few random bytes over the
TCTI its plugins use. TPM calls block, so each probe runs on a daemon thread of its own: a hung
TPM leaves that one thread waiting, the probe reports a timeout, no second probe piles up behind
it, and the agent still exits when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from plastron.agent.config import AgentConfig
from plastron.agent.plugin_loading import plugin_context
from plastron.errors import PlastronError
from plastron.logs import fields
from plastron.tpm.plugin import agent_plugin_tcti
from plastron.tpm.tcti import Tcti

log = logging.getLogger("plastron.agent")

SUBSYSTEM = "tpm"
# Module-level so a test can shorten them in the agent process; not a configuration key
# (SPIRE has none for this).
PROBE_INTERVAL = 10.0
PROBE_TIMEOUT = 5.0

Status = tuple[bool, str]  # (healthy, detail)


def agent_tctis(config: AgentConfig) -> list[Tcti]:
    """The TPMs the agent's enabled plugins talk to, each once (none: no probe, no series)."""
    context = plugin_context(config)
    found: list[Tcti] = []
    for plugin in (config.plugins.single("NodeAttestor"), config.key_manager):
        tcti = None if plugin is None else agent_plugin_tcti(plugin, context)
        if tcti is not None and tcti not in found:
            found.append(tcti)
    return found


class TpmProbe:
    """The last probe's outcome in :attr:`status`; :meth:`run` probes until stopped."""

    def __init__(
        self,
        tctis: Sequence[Tcti],
        *,
        interval: float | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from plastron.tpm.device import TpmDevice  # noqa: PLC0415  # tpm2-pytss: the [tpm] extra

        self._devices = [TpmDevice(tcti) for tcti in tctis]
        self._interval = PROBE_INTERVAL if interval is None else interval
        self._timeout = PROBE_TIMEOUT if timeout is None else timeout
        self._clock = clock
        self.status: Status = (False, "tpm: not probed yet")
        self._probed = False
        self._inflight: asyncio.Future[Status] | None = None
        self._started = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every interval until ``stop`` is set (the first probe is the caller's)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
            if not stop.is_set():
                await self.probe_once()

    async def probe_once(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            stuck = self._clock() - self._started
            self._record((False, f"tpm: the last probe has not returned for {stuck:.0f}s"))
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Status] = loop.create_future()
        self._inflight = future
        self._started = self._clock()
        threading.Thread(
            target=self._probe_thread, args=(loop, future), name="tpm-probe", daemon=True
        ).start()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            outcome = (False, f"tpm: no answer within {self._timeout:g}s")
        self._record(outcome)

    def _probe_thread(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Status]
    ) -> None:
        outcome = self._probe_all()
        with contextlib.suppress(RuntimeError):  # the loop closed while the TPM hung: drop it
            loop.call_soon_threadsafe(_settle, future, outcome)

    def _probe_all(self) -> Status:
        try:
            for device in self._devices:
                device.probe()
        except PlastronError as exc:
            return False, str(exc)
        except Exception as exc:  # any failure is an unhealthy TPM; the reason is reported
            return False, f"tpm: {type(exc).__name__}: {exc}"
        return True, ""

    def _record(self, outcome: Status) -> None:
        """Keep ``outcome``; log only changes (a down TPM logs once, not every interval)."""
        was_healthy, _ = self.status
        healthy, detail = outcome
        if not healthy and (was_healthy or not self._probed):
            log.warning("TPM probe failed", extra=fields(error=detail))
        elif healthy and not was_healthy:
            log.info("TPM answers", extra=fields(tcti=[str(d.tcti) for d in self._devices]))
        self.status, self._probed = outcome, True


def _settle(future: asyncio.Future[Status], outcome: Status) -> None:
    if not future.done():
        future.set_result(outcome)
