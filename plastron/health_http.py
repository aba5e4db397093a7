"""The ``health_checks`` HTTP listener shared by server and agent (SPIRE's shape).

``GET <live_path>`` answers 200 while the process runs its event loop; ``GET <ready_path>``
answers 200 when every subsystem is healthy and 500 otherwise. Both bodies are JSON with one
entry per subsystem, so an operator sees *which* part (datastore, CA/HSM, …) is failing, the
last error it reported (kept after it recovers, so a flap is visible) and how long ago it was
last seen healthy (how long an outage has lasted). Ages count from the checks this listener
ran, on the monotonic clock, so a wall-clock step does not distort them.
Requests are bounded (8 KiB header, 5 s to send it); anything but GET on a known path is 404/405.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plastron.transport.limits import listen_backlog

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT = 5.0

# name -> (healthy, detail)
StatusFn = Callable[[], Awaitable[dict[str, tuple[bool, str]]]]


@dataclass(frozen=True)
class HealthHttpConfig:
    bind_address: str = "localhost"
    bind_port: int = 80
    live_path: str = "/live"
    ready_path: str = "/ready"


@dataclass
class _Seen:
    last_healthy: float | None = None  # monotonic seconds
    last_error: str = ""
    last_error_at: float | None = None


@dataclass
class SubsystemHistory:
    """What each subsystem's checks have shown so far: when it was last healthy, its last
    error and when that was seen."""

    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def record(self, statuses: dict[str, tuple[bool, str]]) -> dict[str, dict[str, object]]:
        """Note one round of checks; return each subsystem's JSON entry."""
        now = self.clock()
        out: dict[str, dict[str, object]] = {}
        for name, (ok, detail) in statuses.items():
            seen = self._seen.setdefault(name, _Seen())
            if ok:
                seen.last_healthy = now
            else:
                seen.last_error, seen.last_error_at = detail or "unhealthy", now
            out[name] = {
                "healthy": ok,
                "detail": detail,
                "last_error": seen.last_error,
                "last_error_seconds_ago": _age(now, seen.last_error_at),
                "last_healthy_seconds_ago": _age(now, seen.last_healthy),
            }
        return out


def _age(now: float, then: float | None) -> float | None:
    """Seconds since ``then`` (to the millisecond), or None when it never happened."""
    return None if then is None else round(now - then, 3)


class HealthHttpServer:
    def __init__(self, config: HealthHttpConfig, statuses: StatusFn) -> None:
        self._config = config
        self._statuses = statuses
        self._history = SubsystemHistory()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle,
            self._config.bind_address,
            self._config.bind_port,
            backlog=listen_backlog(),
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_BYTES:
            await self._reply(writer, 431, {"error": "request header too large"})
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        if path not in (self._config.live_path, self._config.ready_path):
            await self._reply(writer, 404, {"error": "not found"})
            return
        if method != "GET":
            await self._reply(writer, 405, {"error": "method not allowed"})
            return
        statuses = await self._statuses()
        details = self._history.record(statuses)
        if path == self._config.live_path:
            await self._reply(writer, 200, {"live": True, "subsystems": details})
        else:
            ready = all(ok for ok, _ in statuses.values())
            await self._reply(
                writer, 200 if ready else 500, {"ready": ready, "subsystems": details}
            )

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        reason = {
            200: "OK",
            404: "Not Found",
            405: "Method Not Allowed",
            431: "Too Large",
            500: "Internal Server Error",
        }[code]
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
