"""Who is on the other end of a grpclib server stream.

grpclib exposes the connection only as ``stream.peer`` (a ``grpclib.protocol.Peer``
wrapping the asyncio transport); this module is the one place that reaches
through it, so a grpclib upgrade has one thing to fix.

- TLS: the client's leaf certificate as verified by OpenSSL against the trust
  bundle during the handshake, and its SPIFFE ID. Python 3.11 cannot return the
  verified chain, only the leaf. A *resumed* TLS 1.2 session is not trusted:
  its certificate was verified against an older bundle, so it yields no
  identity (Python's ``ssl`` cannot turn off the server session cache; tickets
  are off, see tls.py).
- Unix socket: the kernel's ``SO_PEERCRED`` (pid, uid, gid) of the connecting
  process, taken when it called ``connect()``; and the fact that the caller is
  local (SPIRE's "local" authorization).
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography import x509

from plastron.errors import InvalidArgument
from plastron.spiffe.ids import SpiffeId
from plastron.transport.tls import spiffe_id_of

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
PARSED_LEAVES = 16384  # about one per connected agent


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class PeerInfo:
    """What the transport proves about a caller. Fields not proven are None."""

    local: bool
    """The connection arrived on a Unix socket."""
    credentials: PeerCredentials | None = None
    """SO_PEERCRED of the connecting process (Unix sockets only)."""
    address: tuple[str, int] | None = None
    """Remote IP address and port (TCP only)."""
    certificate: x509.Certificate | None = None
    """Verified TLS client leaf certificate, if one was presented."""
    spiffe_id: SpiffeId | None = None
    """SPIFFE ID of `certificate`, if it is a well-formed X509-SVID."""
    tls_resumed: bool = False
    """A resumed TLS session: its certificate is ignored (see module docstring)."""


def stream_transport(stream: Any) -> Any:
    """The asyncio transport of the connection a grpclib server ``stream`` arrived on."""
    try:
        return stream.peer._transport
    except AttributeError:
        raise InvalidArgument(
            f"peer: {type(stream).__name__} has no grpclib transport (grpclib internals changed?)"
        ) from None


def socket_peer_credentials(sock: Any) -> PeerCredentials:
    """SO_PEERCRED of a connected Unix socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def peer_info(stream: Any) -> PeerInfo:
    """Identify the caller of a grpclib server `stream` (``grpclib.server.Stream``)."""
    transport = stream_transport(stream)
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise InvalidArgument("peer: the stream's transport has no socket (connection closed?)")
    if sock.family == socket.AF_UNIX:
        return PeerInfo(local=True, credentials=socket_peer_credentials(sock))
    peername = transport.get_extra_info("peername")
    address = (str(peername[0]), int(peername[1])) if peername else None
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return PeerInfo(local=False, address=address)
    if ssl_object.session_reused:
        return PeerInfo(local=False, address=address, tls_resumed=True)
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return PeerInfo(local=False, address=address)
    leaf, spiffe_id = _parsed_leaf(der)
    return PeerInfo(local=False, address=address, certificate=leaf, spiffe_id=spiffe_id)


@lru_cache(maxsize=PARSED_LEAVES)
def _parsed_leaf(der: bytes) -> tuple[x509.Certificate, SpiffeId | None]:
    """The verified leaf's certificate and SPIFFE ID, parsed once per certificate: every call
    on a connection presents the same one (parsing it was a fifth of an agent sync's CPU)."""
    leaf = x509.load_der_x509_certificate(der)
    try:
        # Read from a copy: a certificate keeps its parsed extensions (about 2 KiB of Python
        # objects) once they are read, and the kept leaf (one per connected agent) needs only
        # its serial and validity.
        return leaf, spiffe_id_of(x509.load_der_x509_certificate(der))
    except InvalidArgument:
        return leaf, None  # chains to the bundle but is no SVID: no SPIFFE identity
