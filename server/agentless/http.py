"""``POST /api/v1/token`` over HTTPS: the token exchange for callers without an agent.

One request per connection: a head of at most 8 KiB and a JSON body of at most 64 KiB, each
read within 10 s; at most 256 connections at once (more are closed unanswered). TLS from
``serving_cert_file`` or the server's own X509-SVID, followed across its renewals (each
handshake uses the SVID current at that moment). Errors are RFC 6749 §5.2 JSON:
``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from plastron.keymanager import PrivateKey
from plastron.server.agentless.config import ExchangeListenerConfig, ExchangeServingCert
from plastron.server.agentless.discovery import OidcDocuments
from plastron.server.agentless.exchange import (
    ExchangeRefused,
    ExchangeRequest,
    ExchangeResult,
    TokenExchange,
)
from plastron.strict_json import load_untrusted_object
from plastron.transport.tls import https_server_context, https_server_context_from_files

log = logging.getLogger(__name__)

EXCHANGE_PATH = "/api/v1/token"
MAX_HEAD_BYTES = 8192
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
BODY_KEYS = ("audience", "spiffe_id", "csr", "cluster")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
_REASONS |= {405: "Method Not Allowed", 413: "Content Too Large", 429: "Too Many Requests"}
_REASONS |= {431: "Request Header Fields Too Large", 503: "Service Unavailable"}

SvidSource = Callable[[], tuple[Sequence[x509.Certificate], PrivateKey]]


def load_serving_cert(files: ExchangeServingCert) -> ssl.SSLContext:
    return https_server_context_from_files(
        files.cert_file_path, files.key_file_path, "server.agentless_exchange.serving_cert_file"
    )


def check_exchange_listener(config: ExchangeListenerConfig | None) -> None:
    """``validate`` and ``run``: a ``serving_cert_file`` pair must load (ConfigError naming the
    files otherwise), before anything is opened."""
    if config is not None and config.serving_cert_file is not None:
        load_serving_cert(config.serving_cert_file)


def _reply(status: int, doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _error(exc: ExchangeRefused) -> bytes:
    return _reply(exc.status, {"error": exc.error, "error_description": exc.description})


def _headers(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ExchangeRefused("invalid_request", "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ExchangeRefused("invalid_request", "malformed header line")
        if name.lower() in headers:
            raise ExchangeRefused("invalid_request", f"header {name[:64]!r} is given twice")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise ExchangeRefused(
            "invalid_client", "Authorization: Bearer <platform credential> is required", 401
        )
    return credential.strip()


def parse_body(body: bytes) -> dict[str, Any]:
    """The optional JSON body: ``audience`` (list), ``spiffe_id``, ``csr``, ``cluster``."""
    if not body.strip():
        return {}
    doc = load_untrusted_object(
        body,
        limit=MAX_BODY_BYTES,
        what="request body",
        error=lambda message: ExchangeRefused("invalid_request", message),
    )
    unknown = sorted(set(doc) - set(BODY_KEYS))
    if unknown:
        raise ExchangeRefused("invalid_request", f"request body has unknown key {unknown[0]!r}")
    audience = doc.get("audience", [])
    if not isinstance(audience, list) or not all(isinstance(a, str) for a in audience):
        raise ExchangeRefused("invalid_request", "audience must be a list of strings")
    for key in ("spiffe_id", "csr", "cluster"):
        if not isinstance(doc.get(key, ""), str):
            raise ExchangeRefused("invalid_request", f"{key} must be a string")
    return doc


def _b64_der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def result_document(result: ExchangeResult) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spiffe_id": str(result.spiffe_id),
        "token": result.token,
        "expires_at": result.expires_at,
    }
    if result.x509_svid:
        der = serialization.Encoding.DER
        doc["x509_svid"] = [
            base64.b64encode(c.public_bytes(der)).decode() for c in result.x509_svid
        ]
        doc["bundle"] = [base64.b64encode(c.public_bytes(der)).decode() for c in result.bundle]
    return doc


class ExchangeListener:
    def __init__(
        self,
        config: ExchangeListenerConfig,
        exchange: TokenExchange,
        svid: SvidSource,
        discovery: OidcDocuments | None = None,
    ) -> None:
        self._config = config
        self._discovery = discovery
        self.exchange = exchange
        self._svid = svid
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._server: asyncio.Server | None = None
        self._svid_context: tuple[tuple[bytes, ...], ssl.SSLContext] | None = None
        self._file_context = (
            load_serving_cert(config.serving_cert_file) if config.serving_cert_file else None
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _current_context(self) -> ssl.SSLContext:
        if self._file_context is not None:
            return self._file_context
        chain, key = self._svid()
        fingerprint = tuple(c.fingerprint(hashes.SHA256()) for c in chain)
        if self._svid_context is None or self._svid_context[0] != fingerprint:
            self._svid_context = (fingerprint, https_server_context(chain, key))
        return self._svid_context[1]

    def _listening_context(self) -> ssl.SSLContext:
        if self._file_context is not None:
            return self._file_context
        chain, key = self._svid()
        outer = https_server_context(chain, key)

        def on_hello(ssl_object: Any, _name: str | None, _ctx: object) -> None:
            with contextlib.suppress(Exception):  # keep the last context if renewal fails
                current = self._current_context()
                if ssl_object.context is not current:
                    ssl_object.context = current

        outer.sni_callback = on_hello
        return outer

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle,
            self._config.bind_address,
            self._config.bind_port,
            ssl=self._listening_context(),
            ssl_handshake_timeout=READ_TIMEOUT_SECONDS,
            limit=MAX_HEAD_BYTES,
        )
        log.info("token exchange listening port=%d", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            try:
                answer = await self._answer(reader, writer)
                if answer:
                    writer.write(answer)
                    await asyncio.wait_for(writer.drain(), READ_TIMEOUT_SECONDS)
            except (OSError, TimeoutError, ConnectionError):
                pass  # the caller went away or stalled
            finally:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError, ConnectionError):
                    await asyncio.wait_for(writer.wait_closed(), READ_TIMEOUT_SECONDS)

    async def _read(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        except asyncio.LimitOverrunError:
            raise ExchangeRefused("invalid_request", "request header too large", 431) from None
        method, path, headers = _headers(head[:-4])
        if method == "GET" and self._discovery is not None and self._discovery.serves(path):
            return method, path, headers, b""
        if path != EXCHANGE_PATH:
            raise ExchangeRefused("invalid_request", f"no such endpoint {path[:200]!r}", 404)
        if method != "POST":
            raise ExchangeRefused("invalid_request", f"{EXCHANGE_PATH} takes POST", 405)
        if "transfer-encoding" in headers:
            raise ExchangeRefused("invalid_request", "give the body with Content-Length")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
            raise ExchangeRefused(
                "invalid_request", f"Content-Length must be 0..{MAX_BODY_BYTES}", 413
            )
        body = await asyncio.wait_for(reader.readexactly(int(length_text)), READ_TIMEOUT_SECONDS)
        return method, path, headers, body

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        try:
            try:
                method, path, headers, body = await self._read(reader)
            except (TimeoutError, asyncio.IncompleteReadError):
                return b""
            if method == "GET" and self._discovery is not None:
                return _reply(*self._discovery.answer(path))
            doc = parse_body(body)
            request = ExchangeRequest(
                credential=_bearer(headers),
                source=source,
                audience=tuple(doc.get("audience", [])),
                spiffe_id=doc.get("spiffe_id", ""),
                csr=doc.get("csr", ""),
                cluster=doc.get("cluster", ""),
            )
            result = await self.exchange.exchange(request)
        except ExchangeRefused as exc:
            return _error(exc)
        return _reply(200, result_document(result))
