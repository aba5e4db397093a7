"""HTTP/2 keepalive for client connections, and a bound on the PINGs a server answers.

**Client** (gRPC's keepalive: ``keepalive_time`` / ``keepalive_timeout``): a connection that
has received nothing for ``time`` seconds while a call is open sends a PING; if nothing at all
arrives within ``timeout`` seconds after it, the connection is aborted, which ends every call
on it with ``StreamTerminatedError`` (the caller reconnects). Without it a half-open TCP
connection (the server host gone, a NAT mapping dropped) leaves a long-lived stream such as the
agent's ``EntryNotifier/Watch`` waiting forever. Any bytes from the server count as an answer,
as in grpc-go: a connection busy receiving needs no PING.

**Server**: the same timer on every connection a ``BoundedServer`` admits, with or without calls
(``GrpcLimits.keepalive``, 5 min / 20 s): a peer that vanished would otherwise hold its
connection, and an agent's Watch stream on it, for good.

grpclib 0.4 has keepalive settings of its own (``Configuration(_keepalive_time=...)``), but
they do not fit a server-streaming call: it pings only while a stream is in h2's OPEN state (a
client that has sent its whole request is half-closed and is never probed unless pings are
permitted without calls), stops after ``_http2_max_pings_without_data`` PINGs unless the client
itself sends data, and on a missing ACK it closes the transport gracefully, which with TLS waits
up to 30 s for the dead peer's close_notify before any stream learns of it.

**Server** (gRPC's keepalive enforcement): h2 answers every PING it receives, so a peer that
pings in a loop and never reads would make the server queue ACKs without end. A PING that comes
sooner than ``min_interval`` after the previous one, with nothing sent on the connection in
between (no headers, no data), is a strike; past ``max_strikes`` the connection is closed with
GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (grpc-go's words, which its clients understand).
Sending headers or data resets the strikes: clients that ping after receiving data (grpc-go's
and grpc core's bandwidth probes) are never struck for it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, Protocol

from grpclib.config import Configuration
from grpclib.protocol import AbstractHandler, Connection, H2Protocol
from h2.config import H2Configuration

from plastron.transport.limits import MIN_KEEPALIVE_TIME, Keepalive, PingLimits

log = logging.getLogger(__name__)


__all__ = ["MIN_KEEPALIVE_TIME", "H2Probe", "Keepalive", "KeepaliveProtocol", "KeepaliveWatchdog"]


class ProbedConnection(Protocol):
    """What the watchdog needs of a connection (:class:`H2Probe`)."""

    def has_open_calls(self) -> bool: ...

    def send_ping(self, opaque: bytes) -> None: ...

    def abort(self) -> None: ...


class KeepaliveWatchdog:
    """The keepalive timer of one connection (see the module docstring); ``describe`` names
    the connection in the one line logged (at ``level``) when it gives up."""

    def __init__(
        self,
        protocol: ProbedConnection,
        keepalive: Keepalive,
        describe: str,
        level: int = logging.WARNING,
    ) -> None:
        self._protocol = protocol
        self._keepalive = keepalive
        self._describe = describe
        self._level = level
        self._loop = asyncio.get_running_loop()
        self._last_received = self._loop.time()
        self._ping_sent_at: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def start(self) -> None:
        self._schedule(self._keepalive.time)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def received(self) -> None:
        self._last_received = self._loop.time()

    def _schedule(self, delay: float) -> None:
        self._handle = self._loop.call_later(max(delay, 0.0), self._check)

    def _check(self) -> None:
        now = self._loop.time()
        time, timeout = self._keepalive.time, self._keepalive.timeout
        if self._ping_sent_at is not None:
            if self._last_received < self._ping_sent_at:
                due = self._ping_sent_at + timeout
                if now >= due:
                    self._expire(now - self._last_received)
                else:  # look again by then, or sooner to keep the PING rhythm once answered
                    self._schedule(min(due - now, time))
                return
            self._ping_sent_at = None  # answered (by the ACK or anything else)
        silent = now - self._last_received
        if silent < time:
            self._schedule(time - silent)
        elif not (self._keepalive.without_calls or self._protocol.has_open_calls()):
            self._schedule(time)  # idle: nothing waits on this connection
        else:
            self._protocol.send_ping(struct.pack("!d", now))
            self._ping_sent_at = now
            self._schedule(min(timeout, time))

    def _expire(self, silent: float) -> None:
        self.expired = True
        self._handle = None
        log.log(
            self._level,
            "%s silent for %.0fs, keepalive PING unanswered after %gs; closing it",
            self._describe,
            silent,
            self._keepalive.timeout,
        )
        self._protocol.abort()


class H2Probe:
    """A grpclib connection as the watchdog probes it."""

    def __init__(self, connection: Connection, transport: asyncio.Transport) -> None:
        self._connection = connection
        self._transport = transport

    def has_open_calls(self) -> bool:
        """A call is under way: a stream not yet closed on both sides."""
        return any(not stream.closed for stream in self._connection._connection.streams.values())

    def send_ping(self, opaque: bytes) -> None:
        self._connection._connection.ping(opaque)
        self._connection.flush()

    def abort(self) -> None:
        """Drop the connection now (no TLS close_notify to wait for): its calls end at once."""
        self._transport.abort()


def peer_name(transport: asyncio.BaseTransport) -> str:
    peername: Any = transport.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return "a Unix socket peer"


class KeepaliveProtocol(H2Protocol):
    """grpclib's client connection with a :class:`KeepaliveWatchdog`."""

    def __init__(
        self,
        handler: AbstractHandler,
        config: Configuration,
        h2_config: H2Configuration,
        *,
        keepalive: Keepalive,
    ) -> None:
        super().__init__(handler, config, h2_config)
        self._keepalive = keepalive
        self.watchdog: KeepaliveWatchdog | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        probe = H2Probe(self.connection, transport)
        describe = f"server connection {peer_name(transport)}"
        self.watchdog = KeepaliveWatchdog(probe, self._keepalive, describe)
        self.watchdog.start()

    def data_received(self, data: bytes) -> None:
        if self.watchdog is not None:
            self.watchdog.received()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        super().connection_lost(exc)


GOAWAY_TOO_MANY_PINGS = b"too_many_pings"


class PingStrikes:
    """One server connection's count of PINGs that came too soon (module docstring)."""

    def __init__(self, limits: PingLimits) -> None:
        self._limits = limits
        self._last_ping: float | None = None
        self._strikes = 0

    def sent_headers_or_data(self) -> None:
        self._strikes = 0

    def ping_received(self, now: float) -> bool:
        """Count one PING; False once the peer has pinged too often (close the connection)."""
        last, self._last_ping = self._last_ping, now
        if last is not None and now - last < self._limits.min_interval:
            self._strikes += 1
        return self._strikes <= self._limits.max_strikes
