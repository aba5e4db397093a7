"""1,000 workloads connecting to the agent socket at once (a node reboot), each on its own
connection, all connect and all get their SVID.

The burst is made while the agent's event loop cannot accept (every connect() is issued before
the test yields to it), so the kernel's listen backlog alone decides who gets in: with
asyncio's default of 100 the 101st connect() fails with EAGAIN, with ``net.core.somaxconn``
(plastron.transport.limits.listen_backlog) all of them queue.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from grpclib.client import Channel
from grpclib.protocol import H2Protocol

from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.transport.limits import listen_backlog

CALLERS = 1000
HEADER = {"workload.spiffe.io": "true"}


class _ConnectedChannel(Channel):
    """A grpclib channel over a Unix socket that is already connected."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(path=sock.getpeername())
        self._sock = sock

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await self._loop.create_unix_connection(
            self._protocol_factory, sock=self._sock
        )
        return protocol


def _connect_all(path: str, count: int) -> list[socket.socket]:
    """``count`` connects without yielding to the loop; BlockingIOError (EAGAIN) if the
    listener's backlog is full."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            sock.connect(path)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _first_svid(sock: socket.socket) -> str:
    channel = _ConnectedChannel(sock)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=HEADER, timeout=60) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            msg: Any = await stream.recv_message()
            await stream.cancel()
        assert msg is not None
        return str(msg.svids[0].spiffe_id)
    finally:
        channel.close()


@pytest.mark.skipif(listen_backlog() < CALLERS, reason="net.core.somaxconn is below 1,000")
async def test_thousand_callers_connecting_at_once_all_connect_and_get_their_svid(
    workload_api: WorkloadApiEnv,
) -> None:
    env = workload_api
    uid = f"unix:uid:{os.geteuid()}"
    env.cache.set_entries([entry("e1", env.ca.td, "/burst", uid)])
    env.cache.set_x509_svids({"e1": env.ca.svid("/burst")})

    socks = _connect_all(env.socket_path, CALLERS)  # raises EAGAIN on a backlog of 100
    got = await asyncio.gather(*(_first_svid(s) for s in socks))

    assert got == [f"spiffe://{env.ca.td.name}/burst"] * CALLERS
