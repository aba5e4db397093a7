"""One ``StreamSecrets`` call: state-of-the-world xDS over the caller's cache subscription.

The rules are the xDS protocol's as SPIRE's agent applies them:

- every response carries a new random nonce; once one is sent, a request must answer it
  (``response_nonce``), else it is stale and ignored whole;
- a request answering the last response is an ACK when its ``version_info`` is that
  response's, else a NACK (Envoy sends its last good version and ``error_detail``): the NACK is
  logged and the same version is not sent again; the next change is;
- a request may change the resource names; a request without a ``node`` keeps the last one
  (Envoy may send it on the first request only).

Responses are sent when what the caller should hold differs from what was last sent: after a
request with other names or another node, or when the cache changes (rotation, a bundle or
entry change). Each such response gets the next version. A name the caller is entitled to whose
SVID is not minted yet delays the response until it is; a name it is not entitled to ends the
stream with InvalidArgument (as in SPIRE), and losing every entry ends it PermissionDenied.
The caller is checked to be the process that connected before every response.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from plastron.agent.cache import WorkloadCache
from plastron.agent.config import SdsConfig
from plastron.agent.sds.resources import (
    SECRET_TYPE_URL,
    SecretResolver,
    check_type_url,
    packed,
    quoted_names,
)
from plastron.agent.workloadapi.callers import entitled_entries
from plastron.agent.workloadapi.peertracker import CallerWatcher
from plastron.errors import InvalidArgument
from plastron.selector import Selector

log = logging.getLogger("plastron.agent.sds")


def not_authorized_message(names: list[str]) -> str:
    return f"workload is not authorized for the requested resources: {quoted_names(names)}"


class SecretStream:
    """The state of one stream: the last request's names and node, the last response."""

    def __init__(
        self,
        stream: Any,
        caller: CallerWatcher,
        selectors: frozenset[Selector],
        cache: WorkloadCache,
        config: SdsConfig,
    ) -> None:
        self._stream = stream
        self._caller = caller
        self._selectors = selectors
        self._cache = cache
        self._config = config
        self._names: list[str] | None = None  # None until the first request
        self._node: Any = None
        self._version = 0
        self._nonce = ""
        self._sent: bytes | None = None

    async def run(self) -> None:
        """Serve until the client closes its side; errors end the stream with their status."""
        with self._cache.subscribe(self._selectors) as subscription:
            changed = asyncio.ensure_future(subscription.next())
            received = asyncio.ensure_future(self._stream.recv_message())
            try:
                while True:
                    await asyncio.wait({changed, received}, return_when=asyncio.FIRST_COMPLETED)
                    if received.done():
                        request = received.result()
                        if request is None:
                            return
                        received = asyncio.ensure_future(self._stream.recv_message())
                        if not self._accept(request):
                            continue
                    if changed.done():
                        changed.result()
                        changed = asyncio.ensure_future(subscription.next())
                    await self._send_if_changed()
            finally:
                for task in (changed, received):
                    task.cancel()
                await asyncio.gather(changed, received, return_exceptions=True)

    def _accept(self, request: Any) -> bool:
        """Take a request's names and node; False if it is stale and must be ignored."""
        node_id = request.node.id if request.HasField("node") else getattr(self._node, "id", "")
        if self._nonce:
            if request.response_nonce != self._nonce:
                log.debug(
                    "SDS request with a stale nonce ignored node=%s nonce=%s expected=%s",
                    node_id,
                    request.response_nonce,
                    self._nonce,
                )
                return False
            if request.version_info == str(self._version):
                log.debug("SDS version acknowledged node=%s version=%s", node_id, self._version)
            else:
                log.warning(
                    "Envoy rejected SDS version node=%s version=%s kept=%s error=%s",
                    node_id,
                    self._version,
                    request.version_info,
                    request.error_detail.message,
                )
        elif request.HasField("error_detail"):
            log.warning(
                "Envoy reported an SDS error node=%s error=%s",
                node_id,
                request.error_detail.message,
            )
        check_type_url(request.type_url)
        if request.HasField("node"):
            self._node = request.node
        self._names = list(request.resource_names)
        return True

    async def _send_if_changed(self) -> None:
        if self._names is None:
            return  # nothing asked yet
        entries = entitled_entries(self._cache, self._selectors)
        update = self._cache.update_for(self._selectors)
        resolution = SecretResolver(self._config, self._node, entries, update).resolve(self._names)
        if resolution.unknown:
            raise InvalidArgument(not_authorized_message(resolution.unknown))
        if resolution.pending:
            log.debug("SDS response waits for %s", quoted_names(resolution.pending))
            return
        resources = packed(resolution.secrets)
        content = discovery_pb2.DiscoveryResponse(resources=resources).SerializeToString(
            deterministic=True
        )
        if content == self._sent:
            return
        self._caller.check()
        nonce = secrets.token_hex(8)
        response = discovery_pb2.DiscoveryResponse(
            version_info=str(self._version + 1),
            resources=resources,
            type_url=SECRET_TYPE_URL,
            nonce=nonce,
        )
        await self._stream.send_message(response)
        self._version += 1
        self._nonce, self._sent = nonce, content
        log.debug(
            "SDS response sent node=%s version=%s resources=%d",
            getattr(self._node, "id", ""),
            self._version,
            len(resources),
        )
