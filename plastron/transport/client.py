"""grpclib channels: TCP+TLS with a SPIFFE-ID check of the server, or a Unix socket.

The SPIFFE-ID check runs on every new connection right after the TLS
handshake and before grpclib sends any request on it (it hooks the one place
grpclib opens connections), so a server with the wrong identity never sees an
RPC, also after a reconnect.
"""

from __future__ import annotations

import ssl as _ssl
from typing import Any

from grpclib.client import Channel, Handler
from grpclib.protocol import H2Protocol

from plastron.errors import InvalidArgument
from plastron.transport.keepalive import Keepalive, KeepaliveProtocol
from plastron.transport.tls import IdMatcher, PeerIdentityError, verify_peer_spiffe_id

Address = str | tuple[str, int]


class SpiffeChannel(Channel):
    """A grpclib Channel that only talks to a server holding the expected SPIFFE ID; with
    ``keepalive``, each of its connections is probed while a call is open
    (plastron/transport/keepalive.py)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext,
        expected_server_id: IdMatcher,
        keepalive: Keepalive | None = None,
    ) -> None:
        super().__init__(host, port, ssl=ssl)
        self._expected_server_id = expected_server_id
        self._keepalive = keepalive

    def _protocol_factory(self) -> H2Protocol:
        if self._keepalive is None:
            return super()._protocol_factory()
        return KeepaliveProtocol(
            Handler(), self._config, self._h2_config, keepalive=self._keepalive
        )

    async def _create_connection(self) -> Any:
        protocol = await super()._create_connection()
        transport = protocol.connection._transport
        ssl_object = transport.get_extra_info("ssl_object")
        try:
            if ssl_object is None:
                raise PeerIdentityError("tls: connection is not TLS; cannot check the server")
            verify_peer_spiffe_id(ssl_object, self._expected_server_id)
        except BaseException:
            transport.close()
            raise
        return protocol


def parse_address(address: Address) -> tuple[str, int] | str:
    """(host, port) for TCP, or the path for a Unix socket.

    Accepts ``(host, port)``, ``"host:port"``, ``"[v6]:port"``, ``"tcp://ip:port"``,
    ``"unix:///abs/path"`` (SPIFFE_ENDPOINT_SOCKET forms) and ``"/abs/path"``.
    """
    if isinstance(address, tuple):
        host, port = address
        return host, _port(str(port), address)
    text = address
    if text.startswith("unix://"):
        text = text.removeprefix("unix://")
        if not text.startswith("/"):
            raise InvalidArgument(f"address {address!r}: unix:// needs an absolute path")
        return text
    if text.startswith("/"):
        return text
    text = text.removeprefix("tcp://")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(f"address {address!r}: expected host:port or a socket path")
    return host.removeprefix("[").removesuffix("]"), _port(port_text, address)


def _port(text: str, address: Address) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"address {address!r}: port must be 1-65535")
    return int(text)


def open_channel(
    address: Address,
    *,
    ssl: _ssl.SSLContext | None = None,
    expected_server_id: IdMatcher | None = None,
) -> Channel:
    """A grpclib Channel to `address`; TCP with `ssl` checks the server's SPIFFE ID.

    Connecting is lazy (on the first RPC); call :func:`connect` to fail fast.
    """
    target = parse_address(address)
    if isinstance(target, str):
        if ssl is not None:
            raise InvalidArgument(f"address {target!r}: TLS over a Unix socket is not supported")
        return Channel(path=target)
    host, port = target
    if ssl is None:
        if expected_server_id is not None:
            raise InvalidArgument(f"{host}:{port}: a server SPIFFE ID check needs TLS")
        return Channel(host, port)
    if expected_server_id is None:
        raise InvalidArgument(f"{host}:{port}: TLS without an expected server SPIFFE ID")
    return SpiffeChannel(host, port, ssl=ssl, expected_server_id=expected_server_id)


async def connect(channel: Channel) -> None:
    """Open the channel's connection now (running the server identity check)."""
    await channel.__connect__()
