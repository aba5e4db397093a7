"""A grpclib server that bounds what one peer can make it hold.

grpclib 0.4 reads a request message as ``recv_data(5)`` (the gRPC length prefix) and then
``recv_data(length)``, re-opening the HTTP/2 flow-control window as the body comes in: whatever
length a client declares is buffered, up to 4 GiB per stream. Each class here is a subclass of
the grpclib or h2 piece it replaces, used only by :class:`BoundedServer` (nothing is patched
globally):

- :class:`_BoundedStream` (one HTTP/2 stream): refuses a declared length above the method's limit
  before reading the body (RESOURCE_EXHAUSTED); bounds the time to the first complete request
  message (DEADLINE_EXCEEDED); answers a compressed or truncated message with a status instead
  of grpclib's traceback.
- :class:`_BoundedProcessor` / :class:`_BoundedProtocol` (one connection): at most
  SETTINGS_MAX_CONCURRENT_STREAMS calls at once from the first frame on (more are refused with
  REFUSED_STREAM), bounded receive windows, a cap on open connections per peer (over it:
  GOAWAY ENHANCE_YOUR_CALM, then close), and a cap on how often a peer may PING (over it:
  GOAWAY ENHANCE_YOUR_CALM "too_many_pings", then close), and keepalive: a connection silent
  for ``GrpcLimits.keepalive`` is PINGed and dropped if it stays silent
  (plastron/transport/keepalive.py), and a cap on the output it may hold unsent
  (``GrpcLimits.max_unsent_bytes``; over it the connection is aborted): a peer that sends
  frames h2 answers by itself (SETTINGS) and never reads cannot make the server buffer their
  answers without end.

A TLS listener (:meth:`BoundedServer.start_tls`) wraps each connection in
:class:`~plastron.transport.tls_read_buffer.SharedReadBufferSSLProtocol` rather than asyncio's
own, which holds a 256 KiB read buffer per connection. Connections and streams keep grpclib's
events and queues in lists and drop finished calls at once
(plastron/transport/compact_streams.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import grpclib
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import AbstractHandler, Connection, EventsProcessor, H2Protocol, Stream
from grpclib.server import Server
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import PingReceived, RequestReceived
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from plastron.transport.coalesce import CoalescedConnection, CoalescingWriter
from plastron.transport.codec import PreEncodedProtoCodec
from plastron.transport.compact_streams import (
    PromptHandler,
    compact_connection,
    compact_decoder_table,
    compact_stream,
)
from plastron.transport.h2_frames import ServerH2Connection
from plastron.transport.h2_settings import CompactSettings
from plastron.transport.hpack_indexed import replace_decoder
from plastron.transport.keepalive import (
    GOAWAY_TOO_MANY_PINGS,
    H2Probe,
    KeepaliveWatchdog,
    PingStrikes,
    peer_name,
)
from plastron.transport.limits import (
    CONNECTION_WINDOW_BYTES,
    STREAM_WINDOW_BYTES,
    ConnectionLimits,
    GrpcLimits,
    MessageLimits,
)
from plastron.transport.peer_connections import ConnectionObserver, PeerConnections, peer_key
from plastron.transport.tls_read_buffer import SharedReadBufferSSLProtocol

if not grpclib.__version__.startswith("0.4."):  # pragma: no cover - caught at import in CI
    raise ImportError(
        f"plastron.transport.bounded subclasses grpclib 0.4 internals (protocol.Stream.recv_data,"
        f" EventsProcessor, H2Protocol); grpclib {grpclib.__version__} is installed"
    )

log = logging.getLogger(__name__)

_HTTP2_INITIAL_WINDOW = 65_535


class _BoundedStream(Stream):
    """One request stream: each declared message length is checked before its body is read."""

    def __init__(
        self,
        connection: Connection,
        h2_connection: H2Connection,
        writer: CoalescingWriter,
        *,
        stream_id: int,
        method: str,
        max_message_bytes: int,
        first_message_timeout: float,
    ) -> None:
        # grpclib's Stream only calls write() and is_closing() on its transport: the
        # connection's writer, so this stream's frames join the connection's in order.
        super().__init__(connection, h2_connection, writer, stream_id=stream_id)  # type: ignore[arg-type]
        compact_stream(self)
        self._method = method
        self._max_message_bytes = max_message_bytes
        self._first_message_timeout = first_message_timeout
        self._first_message_deadline: float | None = None
        self._first_message_done = False
        # grpclib asks for the 5-byte prefix, then for exactly the length it declares.
        self._expect_prefix = True

    async def recv_data(self, size: int) -> bytes:
        if self._expect_prefix:
            return await self._recv_prefix(size)
        return await self._recv_body(size)

    async def _recv_prefix(self, size: int) -> bytes:
        try:
            data = await self._first_message_bounded(super().recv_data(size))
        except AssertionError:  # grpclib's Buffer: the stream ended short of `size`
            raise self._truncated(size) from None
        if not data:  # the client ended its side: no first message to wait for
            self._first_message_done = True
            return data
        self._expect_prefix = False
        if data[0]:
            raise GRPCError(
                Status.UNIMPLEMENTED, f"compressed messages are not supported ({self._method})"
            )
        return data

    async def _recv_body(self, size: int) -> bytes:
        if size > self._max_message_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"received message larger than max ({size} vs. {self._max_message_bytes} bytes)"
                f" for {self._method}",
            )
        try:
            data = await self._first_message_bounded(super().recv_data(size))
        except AssertionError:
            raise self._truncated(size) from None
        if len(data) != size:
            raise self._truncated(size)
        self._expect_prefix = True
        self._first_message_done = True
        return data

    def _truncated(self, size: int) -> GRPCError:
        part = "a message prefix" if self._expect_prefix else f"a {size}-byte message"
        return GRPCError(
            Status.INVALID_ARGUMENT, f"the request stream ended inside {part} ({self._method})"
        )

    async def _first_message_bounded(self, read: Coroutine[Any, Any, bytes]) -> bytes:
        if self._first_message_done:
            return await read
        loop = asyncio.get_running_loop()
        if self._first_message_deadline is None:  # the clock starts when the handler asks
            self._first_message_deadline = loop.time() + self._first_message_timeout
        try:
            async with asyncio.timeout_at(self._first_message_deadline):
                return await read
        except TimeoutError:
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"no complete request message within {self._first_message_timeout:g}s"
                f" ({self._method})",
            ) from None


def _header_text(value: str | bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class _BoundedProcessor(EventsProcessor):
    """grpclib's HTTP/2 event dispatch, creating :class:`_BoundedStream` for each request."""

    def __init__(
        self,
        handler: AbstractHandler,
        connection: Connection,
        *,
        h2_connection: H2Connection,
        writer: CoalescingWriter,
        limits: GrpcLimits,
    ) -> None:
        super().__init__(handler, connection)
        self._h2_connection = h2_connection
        self._writer = writer
        self._messages = limits.messages
        self._max_streams = limits.connections.max_concurrent_streams
        self._first_message_timeout = limits.connections.first_message_timeout.total_seconds()

    def process_request_received(self, event: RequestReceived) -> None:
        assert event.stream_id is not None
        if len(self.streams) >= self._max_streams:
            # RFC 9113 section 5.1.2: a stream over the advertised limit is refused on its
            # own; REFUSED_STREAM tells the client nothing was processed, so it may retry.
            self._h2_connection.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
            return
        headers = [(_header_text(k), _header_text(v)) for k, v in event.headers or ()]
        method = next((v for k, v in headers if k == ":path"), "")
        stream = _BoundedStream(
            self.connection,
            self._h2_connection,
            self._writer,
            stream_id=event.stream_id,
            method=method,
            max_message_bytes=self._messages.for_method(method),
            first_message_timeout=self._first_message_timeout,
        )
        release_stream = self.register(stream)
        self.handler.accept(stream, headers, release_stream)


class _ServerConnection(CoalescedConnection):
    """grpclib's connection (its output coalesced), telling its PING strikes when it sends
    headers or data."""

    def __init__(
        self,
        connection: H2Connection,
        transport: asyncio.Transport,
        *,
        config: Configuration,
        ping_strikes: PingStrikes,
        max_unsent: int,
        on_overflow: Callable[[int], None],
    ) -> None:
        super().__init__(
            connection, transport, config=config, max_unsent=max_unsent, on_overflow=on_overflow
        )
        compact_connection(self)
        self.ping_strikes = ping_strikes

    def headers_send_process(self) -> None:
        super().headers_send_process()
        self.ping_strikes.sent_headers_or_data()

    def data_send_process(self) -> None:
        super().data_send_process()
        self.ping_strikes.sent_headers_or_data()


class _BoundedProtocol(H2Protocol):
    """One HTTP/2 connection with the limits in force from its first frame."""

    def __init__(
        self,
        handler: AbstractHandler,
        config: Configuration,
        h2_config: H2Configuration,
        *,
        limits: GrpcLimits,
        peers: PeerConnections,
        observer: ConnectionObserver | None,
    ) -> None:
        super().__init__(handler, config, h2_config)
        self._limits = limits
        self._peers = peers
        self._observer = observer
        self._transport: asyncio.BaseTransport | None = None
        self._peer = ""
        self._admitted = False
        self._closing = False
        self._watchdog: KeepaliveWatchdog | None = None

    def _new_h2_connection(self) -> H2Connection:
        h2_conn = ServerH2Connection(config=self.h2_config)  # frames of 16 KiB at most
        h2_conn.decoder = replace_decoder(h2_conn.decoder)  # same limits, faster repeat calls
        compact_decoder_table(h2_conn)
        h2_conn.remote_settings = CompactSettings(client=True)  # as h2 makes it, compact
        h2_conn.local_settings = CompactSettings(
            client=False,
            initial_values={
                SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
            },
        )
        h2_conn.initiate_connection()
        # Advertised in a second SETTINGS frame of the first flight; h2 enforces it only once
        # the peer acknowledges it (then a stream over it is a connection error). Until then a
        # client may not know it yet: _BoundedProcessor refuses the extra streams one by one.
        h2_conn.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: self._limits.connections.max_concurrent_streams}
        )
        h2_conn.increment_flow_control_window(CONNECTION_WINDOW_BYTES - _HTTP2_INITIAL_WINDOW)
        return h2_conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h2_conn = self._new_h2_connection()
        self.connection = _ServerConnection(
            h2_conn,
            transport,
            config=self.config,
            ping_strikes=PingStrikes(self._limits.pings),
            max_unsent=self._limits.max_unsent_bytes,
            on_overflow=self._output_overflow,
        )
        self.processor = _BoundedProcessor(
            self.handler,
            self.connection,
            h2_connection=h2_conn,
            writer=self.connection.writer,
            limits=self._limits,
        )
        self._peer = peer_key(transport)
        if not self._peers.admit(self._peer):
            h2_conn.close_connection(
                error_code=ErrorCodes.ENHANCE_YOUR_CALM,
                additional_data=b"too many connections from this peer",
            )
            self.connection.flush_now()
            transport.close()
            return
        self._admitted = True
        self._start_keepalive(transport)
        if self._observer is not None:
            self._transport = transport
            self._observer.connection_made(transport)
        self.connection.flush()
        self.connection.initialize()

    def _start_keepalive(self, transport: asyncio.Transport) -> None:
        if self._limits.keepalive is not None:
            self._watchdog = KeepaliveWatchdog(
                H2Probe(self.connection, transport),
                self._limits.keepalive,
                f"connection from {peer_name(transport)}",
                logging.INFO,  # routine: a peer that went away without a word
            )
            self._watchdog.start()

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self._closing:
            return
        if self._watchdog is not None:
            self._watchdog.received()
        try:
            events = self.connection.feed(data)
        except ProtocolError as exc:
            # h2 has queued a GOAWAY naming the error (e.g. a stream over the advertised
            # SETTINGS_MAX_CONCURRENT_STREAMS): send it before closing.
            log.debug("HTTP/2 protocol error from %s: %s", self._peer, exc)
            self.connection.flush()
            self.processor.close("Protocol error")
            return
        if not self._pings_allowed(events):
            return
        self.connection.flush()
        for event in events:
            self.processor.process(event)
        self.connection.flush()

    def _pings_allowed(self, events: list[Any]) -> bool:
        """Count the PINGs just read against the connection's strikes; over them, drop the
        answers h2 queued (a PING loop gets none for this read) and close with GOAWAY."""
        assert isinstance(self.connection, _ServerConnection)
        now = asyncio.get_running_loop().time()
        strikes = self.connection.ping_strikes
        pings = (e for e in events if isinstance(e, PingReceived))
        if all(strikes.ping_received(now) for _ in pings):
            return True
        log.debug("closing the connection of %s: too many PINGs", self._peer)
        self._closing = True  # nothing more is read from it
        h2_conn = self.connection._connection
        h2_conn.data_to_send()  # discarded: the connection is closing
        h2_conn.close_connection(
            error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=GOAWAY_TOO_MANY_PINGS
        )
        self.connection.flush()
        self.processor.close("too many PINGs")
        return False

    def _output_overflow(self, unsent: int) -> None:
        """The writer aborted the connection: its peer does not read what it makes us send.

        A cap rather than pausing reads while writing is paused: a paused connection still
        holds its memory until keepalive drops it, and a legitimate client that sends a large
        request before reading the response would deadlock with us (both blocked writing)."""
        self._closing = True  # nothing more is read from it
        log.warning(
            "closing the connection of %s: %d bytes of output unsent, over the %d a connection"
            " may hold (its peer sends frames that need an answer but reads none)",
            self._peer,
            unsent,
            self._limits.max_unsent_bytes,
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        try:
            super().connection_lost(exc)
        finally:
            if self._admitted:
                self._admitted = False
                self._peers.release(self._peer)
                if self._observer is not None and self._transport is not None:
                    self._observer.connection_lost(self._transport)


class BoundedServer(Server):
    """grpclib's Server with :class:`GrpcLimits` enforced on every connection and stream."""

    def __init__(
        self,
        handlers: Collection[Any],
        *,
        limits: GrpcLimits | None = None,
        status_details_codec: Any = None,
        observer: ConnectionObserver | None = None,
    ) -> None:
        # The receive windows are set per connection by _BoundedProtocol, not by Configuration.
        super().__init__(
            handlers, codec=PreEncodedProtoCodec(), status_details_codec=status_details_codec
        )
        self.limits = limits or GrpcLimits()
        self.peers = PeerConnections(self.limits.connections.max_connections_per_peer)
        self.observer = observer

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = PromptHandler(
            self._mapping, self._codec, self._status_details_codec, self.__dispatch__
        )
        self._handlers.add(handler)
        return _BoundedProtocol(
            handler,
            self._config,
            self._h2_config,
            limits=self.limits,
            peers=self.peers,
            observer=self.observer,
        )

    async def start_tls(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext, backlog: int
    ) -> None:
        """Serve TLS on ``host:port``: grpclib's ``start(ssl=...)``, but each connection's TLS
        layer is a :class:`SharedReadBufferSSLProtocol` (no 256 KiB read buffer of its own)."""
        if self._server is not None:
            raise RuntimeError("Server is already started")
        loop = asyncio.get_running_loop()

        def tls_protocol() -> asyncio.BaseProtocol:
            return SharedReadBufferSSLProtocol(loop, self._protocol_factory(), ssl_context)

        self._server = await loop.create_server(
            tls_protocol, host, port, backlog=backlog, reuse_address=True
        )
        self._server_closed_fut = loop.create_future()


__all__ = [
    "BoundedServer",
    "ConnectionLimits",
    "ConnectionObserver",
    "GrpcLimits",
    "MessageLimits",
    "PeerConnections",
]
