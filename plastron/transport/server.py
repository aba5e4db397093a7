"""Start grpclib servers on a TCP port (TLS) and/or a Unix socket, and stop them cleanly.

The Unix socket is bound under a temporary name in its directory, given its
final mode, then renamed into place, so no client can connect while it still
has the process umask's permissions. A leftover socket file is removed only if
it is a socket and nobody answers on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import socket
import ssl as _ssl
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from grpclib.server import Server

from plastron.errors import FailedPrecondition, InvalidArgument

MAX_UDS_PATH = 107  # sun_path is 108 bytes including the NUL


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


def _prepare_uds_dir(path: Path, dir_mode: int) -> None:
    parent = path.parent
    parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    st = parent.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise FailedPrecondition(f"uds: {parent} is not a directory")
    if st.st_uid == os.geteuid():
        os.chmod(parent, dir_mode)


def _remove_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"uds: {path} exists and is not a socket; refusing to remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
    else:
        raise FailedPrecondition(f"uds: another server is listening on {path}")
    finally:
        probe.close()
    path.unlink(missing_ok=True)


def bind_unix_socket(path: str, *, mode: int, dir_mode: int) -> socket.socket:
    """A listening Unix socket at `path` with permissions `mode` from the first connect on."""
    if not os.path.isabs(path) or len(os.fsencode(path)) > MAX_UDS_PATH:
        raise InvalidArgument(
            f"uds: socket path {path!r} must be absolute and at most {MAX_UDS_PATH} bytes"
        )
    final = Path(path)
    _prepare_uds_dir(final, dir_mode)
    _remove_stale_socket(final)
    staging = final.with_name(f".{final.name}.{secrets.token_hex(4)}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(staging))
        os.chmod(staging, mode)
        sock.listen(128)
        os.rename(staging, final)
    except BaseException:
        sock.close()
        staging.unlink(missing_ok=True)
        raise
    sock.setblocking(False)
    return sock


async def start_server(
    handlers: Collection[Any],
    *,
    tcp: tuple[str, int] | None = None,
    uds_path: str | None = None,
    ssl: _ssl.SSLContext | None = None,
    uds_mode: int = 0o600,
    uds_dir_mode: int = 0o700,
    status_details_codec: Any = None,
) -> RunningServer:
    """Serve `handlers` (grpclib service implementations) on TCP+TLS and/or a Unix socket.

    `ssl` applies to the TCP listener only; the Unix socket is plain (callers are
    identified by SO_PEERCRED). The agent's public Workload API socket wants
    ``uds_mode=0o777, uds_dir_mode=0o755``; the admin sockets keep the defaults.
    """
    if tcp is None and uds_path is None:
        raise InvalidArgument("server: give a TCP address, a Unix socket path, or both")
    if tcp is not None and ssl is None:
        raise InvalidArgument(f"server: TCP listener {tcp[0]}:{tcp[1]} requires a TLS context")
    running = RunningServer()
    try:
        if tcp is not None:
            server = Server(list(handlers), status_details_codec=status_details_codec)
            await server.start(tcp[0], tcp[1], ssl=ssl, reuse_address=True)
            running.servers.append(server)
            bound = server._server.sockets[0].getsockname()  # type: ignore[union-attr]
            running.tcp_address = (str(bound[0]), int(bound[1]))
        if uds_path is not None:
            sock = bind_unix_socket(uds_path, mode=uds_mode, dir_mode=uds_dir_mode)
            server = Server(list(handlers), status_details_codec=status_details_codec)
            try:
                await server.start(sock=sock)
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
