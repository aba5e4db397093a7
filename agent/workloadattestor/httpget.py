"""A bounded HTTP GET for the attestors that ask a local daemon: the kubelet (TCP, TLS) and the
Docker Engine (its unix socket). Blocking: callers run it in a thread.

The body is read up to a limit and parsed as JSON; every failure is :class:`HttpGetError` with
a message naming the endpoint, never the bearer token.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass


class HttpGetError(Exception):
    """The request failed, the status was not 200, or the body was not bounded JSON."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket; the Host header is ``localhost`` as the Docker CLI sends."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: a TCP host and port (TLS when ``tls`` is set) or a unix socket."""

    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None
    unix_socket: str | None = None
    timeout: float = 10.0

    def describe(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        if self.unix_socket is not None:
            return _UnixHTTPConnection(self.unix_socket, self.timeout)
        if self.tls is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.tls
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def http_get(
    endpoint: Endpoint, path: str, limit: int, headers: dict[str, str] | None = None
) -> HttpResponse:
    """GET ``path``; the status and at most ``limit`` bytes of body (larger is an error)."""
    where = f"{endpoint.describe()}{path}"
    conn = endpoint.connection()
    try:
        conn.request("GET", path, headers={"Accept": "application/json", **(headers or {})})
        resp = conn.getresponse()
        body = resp.read(limit + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise HttpGetError(f"GET {where}: {_reason(exc)}") from None
    finally:
        conn.close()
    if len(body) > limit:
        raise HttpGetError(f"GET {where}: response is larger than {limit} bytes")
    return HttpResponse(resp.status, body)


def get_json(
    endpoint: Endpoint, path: str, limit: int, headers: dict[str, str] | None = None
) -> object:
    """GET ``path`` expecting 200 and a JSON body; the parsed value."""
    resp = http_get(endpoint, path, limit, headers)
    if resp.status != 200:
        raise HttpGetError(
            f"GET {endpoint.describe()}{path}: status {resp.status}: {_snippet(resp.body)}"
        )
    try:
        return json.loads(resp.body)
    except ValueError as exc:
        raise HttpGetError(f"GET {endpoint.describe()}{path}: body is not JSON ({exc})") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _snippet(body: bytes) -> str:
    """The start of an error body (daemons explain themselves there), printable."""
    text = body[:200].decode("utf-8", "replace").strip()
    return "".join(ch if ch.isprintable() else "?" for ch in text) or "(empty body)"
