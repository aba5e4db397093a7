"""HTTP/2 keepalive for client connections, and a bound on the PINGs a server answers.

**Client** (gRPC's keepalive: ``keepalive_time`` / ``keepalive_timeout``): a connection that
has received nothing for ``time`` seconds while a call is open sends a PING; if nothing at all
arrives within ``timeout`` seconds after it, the connection is aborted, which ends every call
on it with ``StreamTerminatedError`` (the caller reconnects). Without it a half-open TCP
connection (the server host gone, a NAT mapping dropped) leaves a long-lived stream such as the
agent's ``EntryNotifier/Watch`` waiting forever. Any bytes from the server count as an answer,
as in grpc-go: a connection busy receiving needs no PING.

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
from dataclasses import dataclass
from typing import Any, Protocol

from grpclib.config import Configuration
from grpclib.protocol import AbstractHandler, H2Protocol
from h2.config import H2Configuration

from plastron.transport.limits import PingLimits

log = logging.getLogger(__name__)


MIN_KEEPALIVE_TIME = PingLimits.min_interval * 2
"""The shortest ``Keepalive.time``: twice what a server lets pass between PINGs."""


@dataclass(frozen=True)
class Keepalive:
    """A client connection's keepalive: PING after ``time`` s silent, give up ``timeout`` s on."""

    time: float = 30.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.time < MIN_KEEPALIVE_TIME or self.timeout <= 0:
            raise ValueError(
                f"keepalive: time must be at least {MIN_KEEPALIVE_TIME:g}s (got {self.time:g}s)"
                f" and timeout positive (got {self.timeout:g}s)"
            )


class ProbedConnection(Protocol):
    """What the watchdog needs of a connection (:class:`KeepaliveProtocol`)."""

    def has_open_calls(self) -> bool: ...

    def send_ping(self, opaque: bytes) -> None: ...

    def abort(self) -> None: ...


class KeepaliveWatchdog:
    """The timer of one client connection (see the module docstring)."""

    def __init__(self, protocol: ProbedConnection, keepalive: Keepalive, peer: str) -> None:
        self._protocol = protocol
        self._keepalive = keepalive
        self._peer = peer
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
        elif not self._protocol.has_open_calls():
            self._schedule(time)  # idle: nothing waits on this connection
        else:
            self._protocol.send_ping(struct.pack("!d", now))
            self._ping_sent_at = now
            self._schedule(min(timeout, time))

    def _expire(self, silent: float) -> None:
        self.expired = True
        self._handle = None
        log.warning(
            "server connection %s silent for %.0fs, keepalive PING unanswered after %gs;"
            " closing it",
            self._peer,
            silent,
            self._keepalive.timeout,
        )
        self._protocol.abort()


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
        self._transport: asyncio.Transport | None = None
        self.watchdog: KeepaliveWatchdog | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername: Any = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.watchdog = KeepaliveWatchdog(self, self._keepalive, peer)
        self.watchdog.start()

    def data_received(self, data: bytes) -> None:
        if self.watchdog is not None:
            self.watchdog.received()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        super().connection_lost(exc)

    def has_open_calls(self) -> bool:
        """A call is under way: a stream not yet closed on both sides."""
        h2_conn = self.connection._connection
        return any(not stream.closed for stream in h2_conn.streams.values())

    def send_ping(self, opaque: bytes) -> None:
        self.connection._connection.ping(opaque)
        self.connection.flush()

    def abort(self) -> None:
        """Drop the connection now (no TLS close_notify to wait for): its calls end at once."""
        if self._transport is not None:
            self._transport.abort()


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
