"""Plain HTTP(S) requests to a cloud's metadata service and REST APIs, for the cloud attestors.

One bounded request per call, run off the event loop (urllib in a thread): a timeout, a cap on
the response body, no redirects followed (a metadata service never redirects; an API that does
is not the one configured). Every failure is one :class:`~plastron.errors.Unavailable` line
naming what was asked and why; a non-2xx answer is returned to the caller, which knows what
its API's errors mean.

``http://`` URLs are for metadata services (link-local addresses, ``metadata.google.internal``)
and loopback; keys and API credentials travel only over ``https://`` or to a loopback host, so
a network attacker cannot substitute them (:func:`check_secure_url`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

from plastron.errors import ConfigError, Unavailable

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def excerpt(self) -> str:
        """The start of the body, printable, for an error message."""
        text = self.body[:200].decode("utf-8", "replace")
        return "".join(ch if ch.isprintable() else " " for ch in text).strip()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx reaches the caller as an answer


def _opener(use_proxy: bool, tls: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _headers(message: Message) -> dict[str, str]:
    return {k.lower(): v for k, v in message.items()}


def _read(response: object, max_bytes: int, what: str) -> bytes:
    body: bytes = response.read(max_bytes + 1)  # type: ignore[attr-defined]
    if len(body) > max_bytes:
        raise Unavailable(f"{what}: the answer is larger than {max_bytes} bytes")
    return body


def _request_sync(
    request: urllib.request.Request,
    *,
    timeout: float,
    max_bytes: int,
    use_proxy: bool,
    tls: ssl.SSLContext | None,
    what: str,
) -> HttpResponse:
    try:
        with _opener(use_proxy, tls).open(request, timeout=timeout) as response:
            return HttpResponse(
                response.status, _headers(response.headers), _read(response, max_bytes, what)
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResponse(exc.code, _headers(exc.headers), _read(exc, max_bytes, what))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, socket.timeout | TimeoutError):
            reason = f"no answer within {timeout:g}s"
        raise Unavailable(f"{what}: cannot reach {request.full_url}: {reason}") from None


async def request(
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = MAX_RESPONSE_BYTES,
    use_proxy: bool = True,
    tls: ssl.SSLContext | None = None,
) -> HttpResponse:
    """One request; ``what`` starts every error message (e.g. ``gcp_iit: identity token``).
    ``tls`` replaces the system trust store for https (a Kubernetes cluster's own CA)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Unavailable(f"{what}: {url[:200]!r} is not an http:// or https:// URL")
    # the scheme is checked just above: no file: or custom schemes reach urlopen
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)  # noqa: S310
    call = functools.partial(
        _request_sync, req, timeout=timeout, max_bytes=max_bytes, use_proxy=use_proxy, tls=tls,
        what=what,
    )  # fmt: skip
    return await asyncio.to_thread(call)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: object, where: str, *, secure: bool) -> str:
    """An absolute http(s) URL; with ``secure``, https unless the host is loopback."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where} must be a non-empty URL")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} must be an http:// or https:// URL, not {url[:200]!r}")
    if secure and parts.scheme != "https" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{where} must be an https:// URL ({url[:200]!r}): keys and credentials are not "
            "fetched over plain HTTP except from a loopback address"
        )
    return url


def check_secure_url(url: object, where: str) -> str:
    return check_url(url, where, secure=True)
