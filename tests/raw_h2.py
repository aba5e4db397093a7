"""A bare HTTP/2 client (the ``h2`` package) that speaks just enough gRPC to misbehave.

grpclib's own client cannot declare a message length it does not send, open streams past the
server's advertised limit, or sit on a stream without sending; this one can. It is synchronous
(blocking sockets with timeouts): the servers under test are separate processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    PingReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

GRPC_HEADERS = [
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
WORKLOAD_HEADER = ("workload.spiffe.io", "true")


def grpc_frame(body: bytes, *, compressed: bool = False) -> bytes:
    """A gRPC length-prefixed message."""
    return struct.pack(">?I", compressed, len(body)) + body


def declared_prefix(length: int) -> bytes:
    """Just the 5-byte prefix of a message that claims ``length`` bytes."""
    return struct.pack(">?I", False, length)


@dataclass
class CallOutcome:
    """What the server did with one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    """Response headers and trailers (a trailers-only response has both in one block)."""
    data: bytes = b""
    ended: bool = False
    reset_code: int | None = None
    bytes_sent: int = 0

    @property
    def grpc_status(self) -> int | None:
        value = self.headers.get("grpc-status")
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> str:
        return self.headers.get("grpc-message", "")

    @property
    def closed(self) -> bool:
        return self.ended or self.reset_code is not None


class RawH2Client:
    def __init__(self, sock: socket.socket | ssl.SSLSocket, authority: str = "localhost") -> None:
        self.sock = sock
        self.authority = authority
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.calls: dict[int, CallOutcome] = {}
        self.goaway: ConnectionTerminated | None = None
        self.connection_lost = False
        self.server_settings: dict[int, int] = {}
        self.ping_acks = 0
        self.pings_received = 0
        self._flush()

    @classmethod
    def tls(cls, host: str, port: int) -> RawH2Client:
        """Over TLS to a server's TCP port, presenting no client certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # an attacker does not care who the server is
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=30)
        return cls(ctx.wrap_socket(raw), authority=f"{host}:{port}")

    @classmethod
    def unix(cls, path: str) -> RawH2Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(path)
        return cls(sock)

    @classmethod
    def over(cls, sock: socket.socket) -> RawH2Client:
        """Over an already connected socket (e.g. one connect()ed by another uid)."""
        sock.setblocking(True)
        sock.settimeout(30)
        return cls(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.settimeout(30)
            self.sock.sendall(data)

    def open_call(self, method: str, *extra: tuple[str, str]) -> int:
        """HEADERS for a gRPC call to ``method`` ("/pkg.Service/Method"); no message yet."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", method),
            (":authority", self.authority),
            *GRPC_HEADERS,
            *extra,
        ]
        self.h2.send_headers(stream_id, headers)
        self.calls[stream_id] = CallOutcome()
        self._flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end)
        self.calls[stream_id].bytes_sent += len(data)
        self._flush()

    def send_flow_controlled(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send all of ``data``, waiting for the server's WINDOW_UPDATEs as needed."""
        view = memoryview(data)
        while view:
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                if not self.receive(30.0) and self.connection_lost:
                    raise AssertionError("connection lost while sending")
                continue
            self.send(stream_id, bytes(view[:window]))
            view = view[window:]
        if end:
            self.send(stream_id, b"", end=True)

    def receive(self, timeout: float) -> bool:
        """Read once (up to ``timeout``) and process what came; False when nothing did."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return False
        except OSError:
            self.connection_lost = True
            return False
        if not data:
            self.connection_lost = True
            return False
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self.connection_lost = True
            return False
        for event in events:
            self._on_event(event)
        self._flush()
        return True

    def _on_event(self, event: Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        call = self.calls.get(stream_id) if stream_id else None
        if isinstance(event, (ResponseReceived, TrailersReceived)) and call is not None:
            call.headers.update({str(k): str(v) for k, v in event.headers})
        elif isinstance(event, DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if call is not None:
                call.data += event.data
        elif isinstance(event, StreamEnded) and call is not None:
            call.ended = True
        elif isinstance(event, StreamReset) and call is not None:
            call.reset_code = int(event.error_code)
        elif isinstance(event, RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.server_settings[int(code)] = int(change.new_value)
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, PingAckReceived):
            self.ping_acks += 1
        elif isinstance(event, PingReceived):
            self.pings_received += 1  # h2 has queued the ACK

    def ping(self, count: int = 1) -> None:
        """Send ``count`` PINGs back to back, without reading."""
        for n in range(count):
            self.h2.ping(struct.pack("!Q", n))
        self._flush()

    def wait_settings(self, deadline: float = 30.0) -> dict[int, int]:
        """The server's SETTINGS (the first frame it sends)."""
        end = time.monotonic() + deadline
        while SettingCodes.MAX_CONCURRENT_STREAMS not in self.server_settings:
            if time.monotonic() > end or self.connection_lost:
                raise AssertionError(f"no SETTINGS from the server: {self.server_settings}")
            self.receive(0.5)
        return self.server_settings

    def wait_closed(self, stream_id: int, deadline: float = 30.0) -> CallOutcome:
        """Read until the server ends or resets the stream (or the connection goes away)."""
        call = self.calls[stream_id]
        end = time.monotonic() + deadline
        while not call.closed and not self.connection_lost and self.goaway is None:
            if time.monotonic() > end:
                raise AssertionError(f"stream {stream_id} still open after {deadline:g}s: {call}")
            self.receive(0.5)
        return call

    def push_declared_message(self, stream_id: int, declared: int, budget: int) -> CallOutcome:
        """Declare a ``declared``-byte message, then send body bytes as fast as the server's
        flow control lets us, up to ``budget`` bytes, until the server closes the stream.

        A server that buffers whatever is declared keeps opening its window, so it receives the
        whole budget; one that refuses the length stops acknowledging and answers instead.
        """
        self.send(stream_id, declared_prefix(declared))
        call = self.calls[stream_id]
        chunk = b"\0" * self.h2.max_outbound_frame_size
        while call.bytes_sent < budget and not call.closed and not self.connection_lost:
            window = min(self.h2.local_flow_control_window(stream_id), budget - call.bytes_sent)
            if window <= 0:
                if not self.receive(30.0):
                    break  # the server neither opened its window nor answered
                continue
            try:
                self.send(stream_id, chunk[:window])
            except ProtocolError:  # the server closed the stream under us
                break
            self.receive(0.0001)
        return self.wait_closed(stream_id) if not self.connection_lost else call


def rss_bytes(pid: int) -> int:
    """VmRSS of a process (bytes)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def connected_as(uid: int, path: str) -> Iterator[socket.socket]:
    """A Unix-socket connection whose connect() was made by a child running as ``uid``: the
    server's SO_PEERCRED names that child. It stays alive (blocked on a pipe) until the block
    ends, so the server can attest it."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # child: only raw syscalls, then _exit
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            socket.send_fds(child_end, [b"x"], [conn.fileno()])
            child_end.recv(1)  # until the parent is done
        finally:
            os._exit(0)
    child_end.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent_end, 1, 1)
        if not fds:
            raise AssertionError(f"uid {uid} could not connect to {path}")
        with socket.socket(fileno=fds[0]) as conn:
            yield conn
    finally:
        with contextlib.suppress(OSError):
            parent_end.send(b"x")
        parent_end.close()
        os.waitpid(pid, 0)
