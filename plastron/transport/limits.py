"""How much a gRPC peer may make a server hold: message sizes, streams, connections, time.

A gRPC message arrives as a 5-byte prefix (compressed flag, 32-bit length) and a body. A server
that reads whatever length is declared can be made to buffer up to 4 GiB per stream by anyone
who can connect; so every length is checked against the method's limit before the body is read,
and everything else a peer can open is capped (docs/architecture.md, "Bounded gRPC").
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

KiB = 1024
MiB = 1024 * KiB

DEFAULT_MAX_MESSAGE_BYTES = 4 * MiB
"""gRPC's own default receive limit; applies to every method without a smaller one."""

SMALL_PAYLOAD_BYTES = 64 * KiB
"""The largest single field a small request carries: an attestation payload or challenge
answer, a JWT-SVID to validate, a JWT-SVID request's audiences."""

SMALL_MESSAGE_BYTES = SMALL_PAYLOAD_BYTES + 16 * KiB
"""Limit for AttestAgent rounds and Workload API requests: a 64 KiB payload and the rest of its
message (an AttestAgent request also carries a CSR), so an oversize payload is refused by the
method with its own message rather than here."""

STREAM_WINDOW_BYTES = 65_535
"""HTTP/2 per-stream receive window (the protocol's initial value): the most a peer can send on
one stream before the handler reads it, below every message limit."""

CONNECTION_WINDOW_BYTES = 1 * MiB
"""HTTP/2 per-connection receive window: the most a peer can have in flight, unread, over all
the streams of one connection."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The operator-tunable part: the ``grpc_limits`` block of the server and agent config."""

    max_concurrent_streams: int = 100
    """HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: calls at once per connection."""
    max_connections_per_peer: int = 1000
    """Open connections per remote IP address (TCP) or per uid (Unix socket); 10,000 agents
    with one connection each fit as long as they come from ten addresses or more."""
    first_message_timeout: dt.timedelta = dt.timedelta(seconds=10)
    """From when the handler asks for a call's first request message until all of it has
    arrived."""


@dataclass(frozen=True)
class MessageLimits:
    """Largest request message per method ("/package.Service/Method"), with a default."""

    default: int = DEFAULT_MAX_MESSAGE_BYTES
    per_method: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def for_method(self, method: str) -> int:
        return self.per_method.get(method, self.default)


@dataclass(frozen=True)
class PingLimits:
    """How often a peer may PING a server (gRPC's keepalive enforcement; the strikes are
    counted by plastron/transport/keepalive.py)."""

    min_interval: float = 0.5
    """Half the shortest keepalive ``time`` a Plastron client may set: its PINGs never come
    this close together, a PING loop does at once."""
    max_strikes: int = 2


MIN_KEEPALIVE_TIME = PingLimits.min_interval * 2
"""The shortest ``Keepalive.time``: twice what a server lets pass between PINGs."""


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive of one connection (plastron/transport/keepalive.py): PING after
    ``time`` seconds without a byte from the peer, drop the connection if still nothing
    ``timeout`` seconds on. Only while a call is open unless ``without_calls`` (gRPC's
    keepalive_permit_without_calls)."""

    time: float = 30.0
    timeout: float = 10.0
    without_calls: bool = False

    def __post_init__(self) -> None:
        if self.time < MIN_KEEPALIVE_TIME or self.timeout <= 0:
            raise ValueError(
                f"keepalive: time must be at least {MIN_KEEPALIVE_TIME:g}s (got {self.time:g}s)"
                f" and timeout positive (got {self.timeout:g}s)"
            )


SERVER_KEEPALIVE = Keepalive(time=300.0, timeout=20.0, without_calls=True)
"""A server probes any connection silent for 5 minutes, idle or not: a peer that vanished
(host gone, NAT mapping dropped) would otherwise hold its connection, and an agent's Watch
stream on it, for good. A live Plastron agent is never that silent (its syncs, its own PINGs)."""


MAX_UNSENT_BYTES = 2 * MiB
"""Output one server connection may hold unsent (gathered, in asyncio's and TLS's buffers)
before it is aborted. h2 answers SETTINGS and PING by itself and asyncio keeps reading while
writing is paused, so a peer that sends such frames and never reads would otherwise grow it
without end (CVE-2019-9512/9515). A reader however slow stays well below: grpclib stops writing
DATA once the transport pauses writing, at its high-water mark (64 KiB on a socket, 512 KiB in
asyncio's TLS layer; a 4 MiB response to a client that reads nothing peaks near 620 KiB)."""


@dataclass(frozen=True)
class GrpcLimits:
    """Everything a bounded server enforces."""

    connections: ConnectionLimits = ConnectionLimits()
    messages: MessageLimits = MessageLimits()
    pings: PingLimits = PingLimits()
    keepalive: Keepalive | None = SERVER_KEEPALIVE
    max_unsent_bytes: int = MAX_UNSENT_BYTES


SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def listen_backlog(path: str = SOMAXCONN_PATH) -> int:
    """The listen() backlog for every listener: the kernel's own cap, ``net.core.somaxconn``.

    asyncio and grpclib default to 100, so when more callers connect at once than the loop
    accepts (1,000 workloads after a node reboot, thousands of agents after a server restart)
    the rest are refused: a Unix-socket connect() fails with EAGAIN, a TCP SYN is dropped and
    retried a second later. Go's listeners (SPIRE's) read the same file. The kernel clamps any
    larger value to somaxconn, so reading it just asks for the most the kernel allows.
    """
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN
