"""Workload API streams: full state at once, pushed on rotation, entry and bundle change."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from agent_authority import entry
from agent_workload_env import WorkloadApiEnv
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.cli.workload_client import METADATA, WorkloadClient
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.spiffe.x509svid import parse_der_chain

UID = f"unix:uid:{os.geteuid()}"


@contextlib.asynccontextmanager
async def watching(env: WorkloadApiEnv) -> AsyncIterator[asyncio.Queue[object]]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with WorkloadClient(env.socket_path, None) as client:
                async for msg in client.watch_x509():
                    await queue.put(msg)
        except GRPCError as exc:
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _next(queue: asyncio.Queue[object]) -> pb.X509SVIDResponse:
    msg = await asyncio.wait_for(queue.get(), 5)
    assert isinstance(msg, pb.X509SVIDResponse), msg
    return msg


def _serials(msg: pb.X509SVIDResponse) -> dict[str, int]:
    return {s.spiffe_id: parse_der_chain(s.x509_svid)[0].serial_number for s in msg.svids}


async def test_stream_pushes_full_state_on_every_change(workload_api: WorkloadApiEnv) -> None:
    env, ca = workload_api, workload_api.ca
    env.cache.set_entries([entry("a", ca.td, "/a", UID)])
    first_svid = ca.svid("/a")
    env.cache.set_x509_svids({"a": first_svid})
    async with watching(env) as queue:
        first = await _next(queue)
        assert _serials(first) == {"spiffe://example.org/a": first_svid.leaf.serial_number}
        # rotation
        rotated = ca.svid("/a")
        env.cache.set_x509_svids({"a": rotated})
        msg = await _next(queue)
        assert _serials(msg) == {"spiffe://example.org/a": rotated.leaf.serial_number}
        # entry added: the message carries both identities, not a delta
        env.cache.set_entries([*env.cache.entries(), entry("b", ca.td, "/b", UID)])
        env.cache.set_x509_svids({"b": ca.svid("/b")})
        msg = await _next(queue)
        assert set(_serials(msg)) == {"spiffe://example.org/a", "spiffe://example.org/b"}
        # bundle change
        bigger = ca.bundle.with_x509_authority(ca.svid("/extra").leaf)
        env.cache.set_bundle(bigger)
        msg = await _next(queue)
        assert all(s.bundle == bigger.x509_der() for s in msg.svids)
        # entry deleted: the state no longer holds it (absent = revoked)
        env.cache.set_entries([e for e in env.cache.entries() if e.entry_id != "b"])
        msg = await _next(queue)
        assert set(_serials(msg)) == {"spiffe://example.org/a"}
        # last entry gone: the caller has no identity any more
        env.cache.set_entries([])
        ended = await asyncio.wait_for(queue.get(), 5)
        assert isinstance(ended, GRPCError) and ended.status == Status.PERMISSION_DENIED


async def test_stream_waits_for_svid_of_a_new_entry(workload_api: WorkloadApiEnv) -> None:
    env, ca = workload_api, workload_api.ca
    env.cache.set_entries([entry("a", ca.td, "/a", UID)])
    async with watching(env) as queue:
        await asyncio.wait_for(env.cache.svid_wanted.wait(), 5)
        assert queue.empty()
        env.cache.set_x509_svids({"a": ca.svid("/a")})
        msg = await _next(queue)
        assert list(_serials(msg)) == ["spiffe://example.org/a"]


def _connect_as(uid: int, path: str) -> tuple[socket.socket, int, socket.socket]:
    """A connection whose connect() was made by a child running as ``uid``.

    The child stays alive (blocked on a pipe) so the agent can attest it. Returns the
    connected socket and the child's pid.
    """
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # child: only raw syscalls, then _exit
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            socket.send_fds(child_end, [b"x"], [conn.fileno()])
            child_end.recv(1)  # wait until the parent is done
        finally:
            os._exit(0)
    child_end.close()
    _, fds, _, _ = socket.recv_fds(parent_end, 1, 1)
    assert fds, "child could not connect to the socket"
    conn = socket.socket(fileno=fds[0])
    conn.setblocking(False)
    parent_end.setblocking(True)
    return conn, pid, parent_end


class _SocketChannel(Channel):  # type: ignore[misc]
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(path="/unused")
        self._sock = sock

    async def _create_connection(self):  # type: ignore[no-untyped-def]
        _, protocol = await self._loop.create_unix_connection(
            self._protocol_factory, sock=self._sock
        )
        return protocol


async def _fetch_over(sock: socket.socket) -> pb.X509SVIDResponse:
    channel = _SocketChannel(sock)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        async with stub.FetchX509SVID.open(metadata=METADATA, timeout=5) as stream:
            await stream.send_message(pb.X509SVIDRequest(), end=True)
            msg: pb.X509SVIDResponse = await stream.recv_message()
            await stream.cancel()
            return msg
    finally:
        channel.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_caller_is_whoever_connected_not_whoever_holds_the_socket(
    workload_api: WorkloadApiEnv,
) -> None:
    env, ca = workload_api, workload_api.ca
    env.cache.set_entries(
        [entry("root", ca.td, "/root", UID), entry("nobody", ca.td, "/nobody", "unix:uid:65534")]
    )
    env.cache.set_x509_svids({"root": ca.svid("/root"), "nobody": ca.svid("/nobody")})
    sock, pid, control = await asyncio.to_thread(_connect_as, 65534, env.socket_path)
    try:
        # We (root) hold the socket, but the kernel says a uid-65534 process connected it.
        msg = await _fetch_over(sock)
        assert [s.spiffe_id for s in msg.svids] == ["spiffe://example.org/nobody"]
    finally:
        control.send(b"x")
        control.close()
        await asyncio.to_thread(os.waitpid, pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_other_user_without_entry_is_denied(workload_api: WorkloadApiEnv) -> None:
    env, ca = workload_api, workload_api.ca
    env.cache.set_entries([entry("root", ca.td, "/root", UID)])
    env.cache.set_x509_svids({"root": ca.svid("/root")})
    sock, pid, control = await asyncio.to_thread(_connect_as, 65534, env.socket_path)
    try:
        with pytest.raises(GRPCError) as info:
            await _fetch_over(sock)
        assert info.value.status == Status.PERMISSION_DENIED
    finally:
        control.send(b"x")
        control.close()
        await asyncio.to_thread(os.waitpid, pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_stream_ends_when_the_connecting_process_is_gone(
    workload_api: WorkloadApiEnv,
) -> None:
    """The caller is checked again before each message: once the process that connected has
    exited, the next update ends the stream instead of reaching whoever holds the socket."""
    env, ca = workload_api, workload_api.ca
    env.cache.set_entries([entry("nobody", ca.td, "/nobody", "unix:uid:65534")])
    env.cache.set_x509_svids({"nobody": ca.svid("/nobody")})
    sock, pid, control = await asyncio.to_thread(_connect_as, 65534, env.socket_path)
    channel = _SocketChannel(sock)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        with pytest.raises(GRPCError) as info:
            async with stub.FetchX509SVID.open(metadata=METADATA, timeout=10) as stream:
                await stream.send_message(pb.X509SVIDRequest(), end=True)
                first: pb.X509SVIDResponse = await stream.recv_message()
                assert [s.spiffe_id for s in first.svids] == ["spiffe://example.org/nobody"]
                control.send(b"x")  # the connecting process exits...
                await asyncio.to_thread(os.waitpid, pid, 0)
                env.cache.set_x509_svids({"nobody": ca.svid("/nobody")})  # ...then an update
                update = await stream.recv_message()
                assert update is None, "an update was sent to a caller that is gone"
        assert info.value.status == Status.PERMISSION_DENIED
        assert f"process {pid} has exited" in str(info.value.message)
    finally:
        channel.close()
        control.close()
