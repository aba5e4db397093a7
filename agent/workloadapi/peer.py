"""Who is calling the Workload API: the peer process of the Unix-socket stream, from the kernel.

The credentials come from ``SO_PEERCRED`` (``plastron.transport.peer``): what the kernel recorded
at connect(); nothing the caller sends can change them.
"""

from __future__ import annotations

from typing import Any

from plastron.errors import AttestationFailed, InvalidArgument
from plastron.transport.peer import PeerCredentials, peer_info

__all__ = ["PeerCredentials", "peer_credentials"]


def peer_credentials(stream: Any) -> PeerCredentials:
    try:
        peer = peer_info(stream)
    except InvalidArgument as exc:
        raise AttestationFailed(f"workload API: cannot identify the caller: {exc}") from None
    creds = peer.credentials
    if not peer.local or creds is None:
        raise AttestationFailed("workload API: caller is not on a Unix socket; cannot identify it")
    if creds.pid <= 0:
        # 0: the peer lives in a PID namespace we cannot see.
        raise AttestationFailed(f"workload API: caller PID {creds.pid} is not visible to the agent")
    return creds
