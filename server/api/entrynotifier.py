"""``plastron.entrynotifier.v1.EntryNotifier/Watch``: "sync now" pushed to connected agents.

Not SPIRE's: SPIRE agents poll every sync interval (5 s). An agent that opens this stream gets a
message whenever an entry-cache change touches its authorized entries (:class:`CacheChange`),
and syncs at once with SPIRE's own Entry API; the change itself is never sent, so what an agent
may see is decided by SyncAuthorizedEntries alone. Changes reach the cache from this server's
writes at once and from other servers' writes through the datastore's change events (the
cache's poll interval), so agents of every server sharing a datastore are pushed.

Bounds: the stream is authorized as the agent (its X509-SVID, as SyncAuthorizedEntries); each
agent keeps at most ``max_streams_per_agent`` streams (a new one ends the oldest, so a
reconnect after a silently dropped connection is never locked out); pushes are coalesced (one
pending flag per stream, never a queue) and at most one per ``min_gap`` seconds; all streams
together stay within the server-wide push budget (server/pushbudget.py: a push over it waits
its turn, its flag kept); a push the agent does not read within ``SEND_TIMEOUT`` resets the
stream. The stream ends when the agent is banned or evicted, when the SVID it was opened with
is no longer the agent's active one, and when that SVID expires. A dropped connection cancels
the handler, which unregisters it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.proto.entrynotifier.v1 import entrynotifier_pb2
from plastron.proto.entrynotifier.v1.entrynotifier_grpc import EntryNotifierBase
from plastron.proto.spire.api.types import status_pb2
from plastron.records import AttestedNode
from plastron.server.api.authz import current_caller, permission_denied
from plastron.server.api.context import ApiContext
from plastron.server.entrywatchers import MAX_STREAMS_PER_AGENT, EntryWatchers, Watcher
from plastron.server.metrics import ENTRY_PUSHES, ENTRY_PUSHES_DEFERRED

log = logging.getLogger(__name__)

WATCH = "/plastron.entrynotifier.v1.EntryNotifier/Watch"
WATCH_REQUEST_BYTES = 1024  # the request is empty; anything larger is not ours
SEND_TIMEOUT = 30.0
_REASONS = status_pb2.PermissionDeniedDetails


class EntryNotifierService(EntryNotifierBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def Watch(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        watchers = self.ctx.entry_watchers
        if watchers is None:
            raise GRPCError(Status.UNIMPLEMENTED, "this server does not push entry changes")
        caller = current_caller()
        assert caller.agent is not None and caller.leaf is not None  # the AGENT policy
        expires_at = caller.leaf.not_valid_after_utc.timestamp()
        watcher = watchers.open(caller.agent.spiffe_id, str(caller.leaf.serial_number))
        try:
            watcher.pending = True  # the first message: the stream is up, sync now
            while await self._next(watcher, expires_at):
                # Changes that come while the push waits for its slot go out with it.
                if wait := watchers.budget.reserve():
                    ENTRY_PUSHES_DEFERRED.inc()
                    await asyncio.sleep(wait)
                if not await self._push(stream, watchers, watcher):
                    return
                await asyncio.sleep(watchers.min_gap)  # changes meanwhile: one more push
        finally:
            watchers.close(watcher)

    async def _next(self, watcher: Watcher, expires_at: float) -> bool:
        """Wait until a push is due; raises the status that ends the stream instead."""
        # The flags are read before the event is cleared, with no await between: a flag set
        # meanwhile (during the gap after a push) is never lost with its wake-up.
        while not watcher.pending:
            if watcher.replaced:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"agent {watcher.agent_id} opened more than "
                    f"{MAX_STREAMS_PER_AGENT} Watch streams; this oldest one is closed",
                )
            remaining = expires_at - self.ctx.clock.now().timestamp()
            if remaining <= 0:
                raise permission_denied("agent SVID has expired", _REASONS.AGENT_EXPIRED)
            watcher.wake.clear()
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
            # held for as long as the agent is connected and idle (each of them).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await watcher.wake.wait()
        if watcher.node_changed:
            watcher.node_changed = False
            self._check_still_authorized(
                watcher, await self.ctx.datastore.fetch_attested_node(watcher.agent_id)
            )
        return True

    @staticmethod
    def _check_still_authorized(watcher: Watcher, node: AttestedNode | None) -> None:
        sid = watcher.agent_id
        if node is None:
            raise permission_denied(f"agent {sid} is not attested", _REASONS.AGENT_NOT_ATTESTED)
        if node.cert_serial == "":
            raise permission_denied(f"agent {sid} is banned", _REASONS.AGENT_BANNED)
        if watcher.serial not in (node.cert_serial, node.new_cert_serial):
            raise permission_denied(
                f"agent {sid}: the SVID this stream was opened with is no longer active",
                _REASONS.AGENT_NOT_ACTIVE,
            )

    async def _push(self, stream: Stream[Any, Any], watchers: EntryWatchers, w: Watcher) -> bool:
        """Send one "sync now"; False if the agent did not take it in time (stream reset)."""
        w.pending = False
        # Kept from now: the next change that reaches the agent is noticed (its sync after
        # this push sees at least this state).
        watchers.cache.keep_answer(w.agent_id)
        message = entrynotifier_pb2.WatchResponse(revision=watchers.cache.version)
        try:
            await asyncio.wait_for(stream.send_message(message), SEND_TIMEOUT)
        except TimeoutError:
            log.warning("entry push not read in time; stream reset agent_id=%s", w.agent_id)
            await stream.cancel()
            return False
        ENTRY_PUSHES.inc()
        return True
