"""Start bounded gRPC servers on a TCP port (TLS) and/or a Unix socket, and stop them cleanly.

Both listeners are :class:`~plastron.transport.bounded.BoundedServer` (message sizes, streams,
connections per peer, time to the first message); the Unix socket is bound by
:func:`~plastron.transport.uds.bind_unix_socket` (directory checks, mode set before the first
connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from grpclib.server import Server

from plastron.errors import InvalidArgument
from plastron.transport.bounded import BoundedServer, ConnectionObserver
from plastron.transport.limits import GrpcLimits, listen_backlog
from plastron.transport.uds import bind_unix_socket


@dataclass
class RunningServer:
    """Servers started by :func:`start_server`; ``close()`` stops them and removes the socket."""

    servers: list[Server] = field(default_factory=list)
    tcp_address: tuple[str, int] | None = None
    """The bound host and port (the real port when 0 was asked for)."""
    uds_path: str | None = None

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        if self.uds_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.uds_path)

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_server(
    handlers: Collection[Any],
    *,
    tcp: tuple[str, int] | None = None,
    uds_path: str | None = None,
    ssl: _ssl.SSLContext | None = None,
    uds_mode: int = 0o600,
    uds_dir_mode: int = 0o700,
    status_details_codec: Any = None,
    limits: GrpcLimits | None = None,
    uds_observer: ConnectionObserver | None = None,
) -> RunningServer:
    """Serve `handlers` (grpclib service implementations) on TCP+TLS and/or a Unix socket.

    `ssl` applies to the TCP listener only; the Unix socket is plain (callers are
    identified by SO_PEERCRED). The agent's public Workload API socket wants
    ``uds_mode=0o777, uds_dir_mode=0o755``; the admin sockets keep the defaults. Each
    listener counts connections per peer on its own; ``uds_observer`` is told of each
    connection the Unix socket admits.
    """
    if tcp is None and uds_path is None:
        raise InvalidArgument("server: give a TCP address, a Unix socket path, or both")
    if tcp is not None and ssl is None:
        raise InvalidArgument(f"server: TCP listener {tcp[0]}:{tcp[1]} requires a TLS context")
    running = RunningServer()
    try:
        if tcp is not None and ssl is not None:  # no TLS context was refused above
            server = BoundedServer(
                handlers, limits=limits, status_details_codec=status_details_codec
            )
            await server.start_tls(tcp[0], tcp[1], ssl_context=ssl, backlog=listen_backlog())
            running.servers.append(server)
            bound = server._server.sockets[0].getsockname()  # type: ignore[union-attr]
            running.tcp_address = (str(bound[0]), int(bound[1]))
        if uds_path is not None:
            sock = bind_unix_socket(uds_path, mode=uds_mode, dir_mode=uds_dir_mode)
            server = BoundedServer(
                handlers,
                limits=limits,
                status_details_codec=status_details_codec,
                observer=uds_observer,
            )
            try:
                # asyncio calls listen() again with this backlog when it starts serving.
                await server.start(sock=sock, backlog=listen_backlog())
            except BaseException:
                sock.close()
                raise
            running.servers.append(server)
            running.uds_path = uds_path
    except BaseException:
        await running.close()
        raise
    return running


async def wait_closed_forever(running: RunningServer) -> None:
    """Serve until cancelled, then close (for main loops)."""
    try:
        await asyncio.Event().wait()
    finally:
        await running.close()
