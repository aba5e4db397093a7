"""Open connections per peer (an IP address, or a uid on a Unix socket), and who is told of
them: the per-peer connection cap every ``BoundedServer`` listener enforces."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any, Protocol

from plastron.transport.peer import socket_peer_credentials

log = logging.getLogger(__name__)


class ConnectionObserver(Protocol):
    """Told of every admitted connection when it is made and when it is lost (e.g. the agent's
    record of who connected, made at accept)."""

    def connection_made(self, transport: Any) -> None: ...

    def connection_lost(self, transport: Any) -> None: ...


def peer_key(transport: asyncio.BaseTransport) -> str:
    """Whom a connection counts against: the remote IP address, or the uid on a Unix socket."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        return f"uid {socket_peer_credentials(sock).uid}"
    peername = transport.get_extra_info("peername")
    return str(peername[0]) if peername else "unknown"


class PeerConnections:
    """Open connections per peer, refusing any over ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: Counter[str] = Counter()
        self._warned: set[str] = set()

    def open_count(self, peer: str) -> int:
        return self._open[peer]

    def admit(self, peer: str) -> bool:
        if self._open[peer] >= self.cap:
            if peer not in self._warned:  # once per episode: a flood must not flood the log
                self._warned.add(peer)
                log.warning(
                    "refusing connections from %s: %d open (grpc_limits.max_connections_per_peer)",
                    peer,
                    self.cap,
                )
            return False
        self._open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self._open[peer] -= 1
        if self._open[peer] <= 0:
            del self._open[peer]
        self._warned.discard(peer)
