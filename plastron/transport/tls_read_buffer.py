"""Server-side TLS connections that share one read buffer per thread (and keep no parsed
copy of the peer's certificate).

asyncio's ``SSLProtocol`` (Python 3.11+) gives every connection its own 256 KiB ``bytearray``
for ``recv_into`` and zero-fills it at once, so each idle TLS connection holds 256 KiB of
resident memory, most of what an idle connection costs (bench/conn_memory.py; 10,000 agents
would be 2.5 GiB for this buffer alone). The buffer is only in use between the event loop's
``get_buffer()`` and the ``buffer_updated()`` that follows it in the same callback, which copies
the bytes into the connection's OpenSSL memory BIO at once: nothing else runs in between, so
every connection served by one thread's event loop can read into the same buffer. Reads stay
256 KiB at a time. OpenSSL's own record buffers are already released when idle (CPython sets
``SSL_MODE_RELEASE_BUFFERS`` on every context). Certificate checks, timeouts and limits are
asyncio's, unchanged: only where the ciphertext lands before decryption differs.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from asyncio.sslproto import SSLProtocol

_READ_BYTES = SSLProtocol.max_size  # asyncio's read size, kept
# Application data is encrypted at most this much at a time (see _write_appdata): 4 KiB keeps
# the outgoing BIO under ~6 KiB, three encryption calls for a 12 KiB response.
WRITE_PIECE_BYTES = 4096
WRITE_PIECES = 16  # at most, for a write over 64 KiB (an agent with thousands of entries)


class _ThreadBuffer(threading.local):
    view: memoryview | None = None


_buffer = _ThreadBuffer()


def _read_buffer() -> memoryview:
    if _buffer.view is None:
        _buffer.view = memoryview(bytearray(_READ_BYTES))
    return _buffer.view


class SharedReadBufferSSLProtocol(SSLProtocol):
    """asyncio's server-side TLS protocol without a read buffer of its own."""

    # Set by asyncio's SSLProtocol (3.11+); typeshed does not list them.
    _outgoing: ssl.MemoryBIO
    _ssl_writing_paused: bool

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        ctx: ssl.SSLContext,
    ) -> None:
        # The base class allocates bytearray(self.max_size) here; make that an empty one.
        self.max_size = 0  # type: ignore[misc]  # shadowed for __init__ only
        try:
            # No waiter: a failed handshake closes the connection (asyncio's accept path
            # passes one only to log it in debug mode).
            super().__init__(loop, app_protocol, ctx, None, server_side=True)  # type: ignore[arg-type]
        finally:
            del self.max_size  # back to the class's read size for decrypting
        # Application writes wait here only until they are encrypted, within the same call
        # (after the handshake; before it grpclib writes nothing): a deque's 64-slot block
        # (about 760 bytes per connection) for at most an item or two.
        self._write_backlog = []  # type: ignore[assignment]  # append, [0], del [0], clear
        self._gathered: list[bytes] | None = None  # ciphertext of a write being pieced
        if len(self._ssl_buffer_view) != 0:  # pragma: no cover - a future asyncio
            raise RuntimeError(
                "asyncio.sslproto.SSLProtocol no longer sizes its buffer by max_size"
            )

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        super()._on_handshake_complete(handshake_exc)
        # asyncio keeps ssl_object.getpeercert()'s dict (subject, issuer, SANs as tuples of
        # strings: about 2 KiB) in every connection's extra info for as long as it is open.
        # Nothing here reads it: the peer is identified from the DER form, parsed once
        # (plastron/transport/peer.py), and the SSLObject stays in the extra info.
        self._extra.pop("peercert", None)

    def _write_appdata(self, list_of_data: list[bytes]) -> None:
        # asyncio encrypts each write whole into the connection's outgoing memory BIO before
        # handing the ciphertext to the socket, and OpenSSL's memory BIO keeps the largest
        # size it ever held: one 12 KiB response (an agent's ~100 entries) left every agent's
        # connection holding about 16 KiB, a 1 MiB one 1.3 MiB. A large write is encrypted in
        # pieces here, the BIO emptied after each (it stays under about 6 KiB), and the
        # ciphertext goes to the socket in one write, as asyncio's would.
        for data in list_of_data:
            if len(data) <= WRITE_PIECE_BYTES:
                super()._write_appdata([data])
            else:
                self._write_in_pieces(data)

    def _write_in_pieces(self, data: bytes) -> None:
        # A write over 64 KiB goes in at most WRITE_PIECES pieces (each costs an encryption
        # call): its connection keeps a sixteenth of it.
        piece = max(WRITE_PIECE_BYTES, -(-len(data) // WRITE_PIECES))
        self._gathered = []
        try:
            for start in range(0, len(data), piece):
                super()._write_appdata([bytes(data[start : start + piece])])
        finally:
            gathered, self._gathered = self._gathered, None
        sock = self._transport
        if gathered and isinstance(sock, asyncio.WriteTransport) and not sock.is_closing():
            sock.write(b"".join(gathered))
            self._control_app_writing()  # type: ignore[attr-defined]  # as asyncio's

    def _process_outgoing(self) -> None:
        # Within _write_in_pieces (and only there), the ciphertext is gathered instead of
        # written. A socket that paused writing before it keeps asyncio's way: the ciphertext
        # waits in the BIO, counted by asyncio's flow control.
        if self._gathered is None or self._ssl_writing_paused:
            super()._process_outgoing()  # type: ignore[misc]
            return
        data = self._outgoing.read()
        if data:
            self._gathered.append(data)
        self._control_app_writing()  # type: ignore[attr-defined]

    def get_buffer(self, n: int) -> memoryview:
        # buffer_updated() reads self._ssl_buffer_view; point it at the shared buffer.
        self._ssl_buffer_view = _read_buffer()
        return self._ssl_buffer_view
