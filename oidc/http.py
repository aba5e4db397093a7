"""A small bounded HTTP/1.1 server for the two documents (one request per connection).

Bounds: a request head of at most 8 KiB read within 5 s, no request body, at most
``MAX_CONNECTIONS`` connections at once (more are closed unanswered), and 5 s to write the
answer. Only GET is served; everything else is 404 or 405 with a one-line text body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plastron.clock import Clock
from plastron.errors import InvalidArgument
from plastron.logs import fields
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.oidc import (
    KEYS_PATH,
    WELL_KNOWN_PATH,
    DomainAllowList,
    discovery_document,
    jwks_document,
)

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_SECONDS = 5.0
WRITE_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 512
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {413: "Content Too Large", 431: "Request Header Fields Too Large"}
_REASONS |= {500: "Internal Server Error"}
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    tls: bool


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text_response(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def json_response(doc: dict[str, Any], extra: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, indent=2).encode()
    return Response(200, body, "application/json", tuple((extra or {}).items()))


def parse_head(head: bytes, tls: bool) -> Request:
    """The request line and headers; InvalidArgument on anything malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise InvalidArgument("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise InvalidArgument("malformed header line")
        headers.setdefault(name.lower(), value.strip())
    return Request(parts[0], parts[1].split("?", 1)[0], headers, tls)


class DocumentHandler:
    """Routes a request to the discovery document or the JWKS (SPIRE's handler)."""

    def __init__(
        self,
        *,
        domains: DomainAllowList,
        bundle: Callable[[], Bundle | None],
        clock: Clock,
        allow_insecure_scheme: bool,
        jwt_issuer: str | None,
        jwks_uri: str | None,
        path_prefix: str = "/",
    ) -> None:
        self._domains = domains
        self._bundle = bundle
        self._clock = clock
        self._allow_insecure_scheme = allow_insecure_scheme
        self._jwt_issuer = jwt_issuer
        self._jwks_uri = jwks_uri
        self._prefix = path_prefix
        self.well_known_path = path_prefix + WELL_KNOWN_PATH
        self.keys_path = path_prefix + KEYS_PATH

    def handle(self, request: Request) -> Response:
        if request.path not in (self.well_known_path, self.keys_path):
            return text_response(404, "404 page not found")
        if request.method != "GET":
            return text_response(405, "method not allowed")
        # Behind a proxy (listen_socket_path, insecure_addr) the public name arrives as
        # X-Forwarded-Host; either way it must be one of the configured domains.
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        try:
            self._domains.check(host)
        except InvalidArgument as exc:
            return text_response(400, str(exc))
        if request.path == self.keys_path:
            return self._keys()
        return self._well_known(request, host)

    def _well_known(self, request: Request, host: str) -> Response:
        forwarded_https = request.headers.get("x-forwarded-proto", "").lower() == "https"
        insecure = self._allow_insecure_scheme and not request.tls and not forwarded_https
        base = f"{'http' if insecure else 'https'}://{host}"
        issuer = self._jwt_issuer or base + self._prefix.rstrip("/")
        jwks_uri = self._jwks_uri or base + self.keys_path
        return json_response(discovery_document(issuer, jwks_uri))

    def _keys(self) -> Response:
        bundle = self._bundle()
        if bundle is None:
            return text_response(500, "document not available")
        return json_response(jwks_document(bundle, self._clock.now()), _NO_CACHE)


def encode_response(response: Response) -> bytes:
    reason = _REASONS.get(response.status, "")
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


class HttpConnections:
    """asyncio's client-connected callback for one listener, with the bounds above."""

    def __init__(self, handler: DocumentHandler, *, tls: bool, log_requests: bool) -> None:
        self._handler = handler
        self._tls = tls
        self._log_requests = log_requests
        self._open = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            response = await self._answer(reader)
            if response is not None:
                writer.write(encode_response(response))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, ConnectionError):
            pass  # the peer went away or stalled; nothing to tell it
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_SECONDS)

    async def _answer(self, reader: asyncio.StreamReader) -> Response | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        except asyncio.LimitOverrunError:
            return text_response(431, "request header too large")
        except (TimeoutError, asyncio.IncompleteReadError):
            return None
        if len(head) > MAX_HEAD_BYTES:
            return text_response(431, "request header too large")
        try:
            request = parse_head(head[:-4], self._tls)
        except InvalidArgument as exc:
            return text_response(400, str(exc))
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
            request.headers
        ):
            return text_response(413, "a request body is not accepted")
        response = self._handler.handle(request)
        if self._log_requests:
            log.debug(
                "request",
                extra=fields(method=request.method, path=request.path, status=response.status),
            )
        return response
