"""Just enough HTTP/1.1 for the SPIFFE bundle endpoint, on asyncio streams.

The bundle endpoint is one resource: ``GET /`` answering a JWK Set (SPIFFE Federation spec §4).
Both halves are small and strict rather than general: the server reads one request head of at
most 8 KiB within 10 s, answers it and closes; the client sends one GET, accepts a
``Content-Length`` or chunked body of at most the bundle limit, and gives up after its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from plastron.errors import InvalidArgument, Unavailable

MAX_REQUEST_HEAD = 8192
MAX_RESPONSE_HEAD = 16384
REQUEST_READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 128
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


Responder = Callable[[str, str], Reply]  # (method, path) -> reply


def _response_bytes(reply: Reply) -> bytes:
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + reply.body


def _error(status: int, message: str) -> Reply:
    return Reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")


def _parse_request_line(head: bytes) -> tuple[str, str] | None:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None


class OneShotHttpServer:
    """Answers one request per connection through ``respond``; at most MAX_CONNECTIONS at once."""

    def __init__(self, respond: Responder) -> None:
        self._respond = respond
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()  # full: shed the connection rather than queue it
            return
        async with self._slots:
            try:
                await self._answer(reader, writer)
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
                pass  # the peer went away or stalled; nothing to answer
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 5.0)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            head = b""
        if not head or len(head) > MAX_REQUEST_HEAD:
            reply = _error(400, "request head too large")
        elif (request := _parse_request_line(head)) is None:
            reply = _error(400, "malformed request line")
        else:
            reply = self._respond(*request)
        writer.write(_response_bytes(reply))
        await asyncio.wait_for(writer.drain(), REQUEST_READ_TIMEOUT)


def reader_limit() -> int:
    """The StreamReader limit for the server: a head larger than this is refused."""
    return MAX_REQUEST_HEAD


# ---- client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpsUrl:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> HttpsUrl:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidArgument(f"bundle endpoint URL {url!r} must be https://host[:port]/path")
        if parts.username or parts.password or parts.fragment:
            raise InvalidArgument(
                f"bundle endpoint URL {url!r} must not carry userinfo or fragment"
            )
        try:
            port = parts.port or 443
        except ValueError:
            raise InvalidArgument(f"bundle endpoint URL {url!r} has an invalid port") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, path)


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Unavailable("bundle endpoint sent a malformed chunk size") from None
        if size == 0:
            return bytes(body)
        if size < 0 or len(body) + size > max_bytes:
            raise Unavailable(f"bundle endpoint response is larger than {max_bytes} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise Unavailable("bundle endpoint sent a malformed chunk")


def _parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/1."):
        raise Unavailable(f"bundle endpoint sent no HTTP/1.x status line ({lines[0][:64]!r})")
    try:
        status = int(status_parts[1])
    except ValueError:
        raise Unavailable(
            f"bundle endpoint sent a malformed status line ({lines[0][:64]!r})"
        ) from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], max_bytes: int
) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return await _read_chunked(reader, max_bytes)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise Unavailable("bundle endpoint sent a malformed Content-Length") from None
        if not 0 <= length <= max_bytes:
            raise Unavailable(f"bundle endpoint response is {length} bytes; limit {max_bytes}")
        return await reader.readexactly(length)
    body = await reader.read(max_bytes + 1)  # no length: the body ends with the connection
    if len(body) > max_bytes:
        raise Unavailable(f"bundle endpoint response is larger than {max_bytes} bytes")
    return body


async def https_get(
    url: HttpsUrl,
    context: ssl.SSLContext,
    *,
    max_bytes: int,
    on_connected: Callable[[ssl.SSLObject], None] | None = None,
) -> bytes:
    """GET ``url`` over TLS; the body of a 200 reply, Unavailable for anything else.

    ``on_connected`` runs after the handshake, before the request is sent (the peer check).
    """
    reader, writer = await asyncio.open_connection(
        url.host, url.port, ssl=context, server_hostname=url.host, limit=MAX_RESPONSE_HEAD
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        if on_connected is not None:
            on_connected(ssl_object)
        host = url.host if url.port == 443 else f"{url.host}:{url.port}"
        request = (
            f"GET {url.path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
            "User-Agent: plastron-server\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise Unavailable("bundle endpoint sent a response head that is too large") from None
        status, headers = _parse_response_head(head)
        if status != 200:
            raise Unavailable(f"bundle endpoint answered HTTP {status}")
        return await _read_body(reader, headers, max_bytes)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
