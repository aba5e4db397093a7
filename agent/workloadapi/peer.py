"""Who is calling: the peer process of a Unix-socket gRPC stream, from the kernel."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from plastron.errors import AttestationFailed

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(stream: Any) -> PeerCredentials:
    """``SO_PEERCRED`` of the connection carrying a grpclib server stream.

    The credentials are what the kernel recorded at connect(); nothing the caller sends
    can change them.
    """
    transport = getattr(stream.peer, "_transport", None)
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        raise AttestationFailed("workload API: caller is not on a Unix socket; cannot identify it")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if pid <= 0:
        # 0: the peer lives in a PID namespace we cannot see.
        raise AttestationFailed(f"workload API: caller PID {pid} is not visible to the agent")
    return PeerCredentials(pid, uid, gid)
