"""Unix-socket serving: SO_PEERCRED, socket file handling, and a grpcio client against grpclib."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from spiffe._proto import workload_pb2 as spiffe_workload_pb2
from spiffe._proto import workload_pb2_grpc as spiffe_workload_grpc

from plastron.errors import FailedPrecondition, InvalidArgument
from plastron.proto.workload import workload_grpc, workload_pb2
from plastron.transport.client import open_channel, parse_address
from plastron.transport.peer import PeerInfo, peer_info
from plastron.transport.server import start_server


class TinyWorkloadApi(workload_grpc.SpiffeWorkloadAPIBase):
    """Just enough of the Workload API to exercise the transport."""

    def __init__(self) -> None:
        self.callers: list[PeerInfo] = []

    async def FetchX509SVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchX509Bundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchJWTSVID(self, stream: Any) -> None:
        request = await stream.recv_message()
        self.callers.append(peer_info(stream))
        if stream.metadata.get("workload.spiffe.io") != "true":
            raise GRPCError(Status.INVALID_ARGUMENT, "security header missing")
        svid = workload_pb2.JWTSVID(
            spiffe_id="spiffe://example.org/w", svid=",".join(request.audience)
        )
        await stream.send_message(workload_pb2.JWTSVIDResponse(svids=[svid]))

    async def FetchJWTBundles(self, stream: Any) -> None:
        await stream.recv_message()
        for n in range(3):  # a server stream, as the real one is
            await stream.send_message(
                workload_pb2.JWTBundlesResponse(bundles={"spiffe://td": b"%d" % n})
            )

    async def ValidateJWTSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchWITSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def FetchWITBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "public" / "api.sock")


async def test_peer_credentials_on_unix_socket(sock_path: str) -> None:
    api = TinyWorkloadApi()
    async with await start_server([api], uds_path=sock_path):
        channel = open_channel(f"unix://{sock_path}")
        try:
            stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
            reply = await stub.FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=["a"]),
                metadata={"workload.spiffe.io": "true"},
                timeout=10,
            )
        finally:
            channel.close()
    assert reply.svids[0].svid == "a"
    caller = api.callers[0]
    assert caller.local is True
    assert caller.credentials is not None
    assert (caller.credentials.pid, caller.credentials.uid, caller.credentials.gid) == (
        os.getpid(),
        os.getuid(),
        os.getgid(),
    )
    assert caller.spiffe_id is None and caller.address is None
    assert not os.path.exists(sock_path)  # removed on close


async def test_grpcio_client_calls_grpclib_server_over_uds(sock_path: str) -> None:
    """The `spiffe` package's own grpcio stub, as py-spiffe uses it, against our server."""
    api = TinyWorkloadApi()

    def call() -> tuple[list[str], list[bytes], grpc.StatusCode]:
        with grpc.insecure_channel(f"unix:{sock_path}") as channel:
            stub = spiffe_workload_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
            header = [("workload.spiffe.io", "true")]
            jwt = stub.FetchJWTSVID(
                spiffe_workload_pb2.JWTSVIDRequest(audience=["x", "y"]), metadata=header, timeout=10
            )
            bundles = [
                m.bundles["spiffe://td"]
                for m in stub.FetchJWTBundles(
                    spiffe_workload_pb2.JWTBundlesRequest(), metadata=header, timeout=10
                )
            ]
            try:
                stub.FetchJWTSVID(spiffe_workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            return [s.svid for s in jwt.svids], bundles, code

    async with await start_server([api], uds_path=sock_path, uds_mode=0o777, uds_dir_mode=0o755):
        svids, bundles, code = await asyncio.to_thread(call)
    assert svids == ["x,y"]
    assert bundles == [b"0", b"1", b"2"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert all(c.credentials is not None and c.credentials.pid == os.getpid() for c in api.callers)


async def test_socket_and_directory_modes(sock_path: str) -> None:
    async with await start_server([TinyWorkloadApi()], uds_path=sock_path):
        mode = os.stat(sock_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o700
        assert os.listdir(os.path.dirname(sock_path)) == ["api.sock"]  # no staging leftovers
    public = os.path.join(os.path.dirname(os.path.dirname(sock_path)), "agent", "api.sock")
    async with await start_server(
        [TinyWorkloadApi()], uds_path=public, uds_mode=0o777, uds_dir_mode=0o755
    ):
        assert stat.S_IMODE(os.stat(public).st_mode) == 0o777
        assert stat.S_IMODE(os.stat(os.path.dirname(public)).st_mode) == 0o755


async def test_stale_socket_is_replaced_but_live_one_and_files_are_not(sock_path: str) -> None:
    os.makedirs(os.path.dirname(sock_path))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # file left behind, nobody listening
    async with await start_server([TinyWorkloadApi()], uds_path=sock_path):
        with pytest.raises(FailedPrecondition, match="another server is listening"):
            await start_server([TinyWorkloadApi()], uds_path=sock_path)
    Path(sock_path).write_text("not a socket")
    with pytest.raises(FailedPrecondition, match="not a socket"):
        await start_server([TinyWorkloadApi()], uds_path=sock_path)
    assert Path(sock_path).read_text() == "not a socket"


async def test_server_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="requires a TLS context"):
        await start_server([TinyWorkloadApi()], tcp=("127.0.0.1", 0))
    with pytest.raises(InvalidArgument, match="absolute"):
        await start_server([TinyWorkloadApi()], uds_path="relative.sock")
    with pytest.raises(InvalidArgument, match="at most"):
        await start_server([TinyWorkloadApi()], uds_path="/" + "x" * 200)
    with pytest.raises(InvalidArgument):
        await start_server([TinyWorkloadApi()])


def test_parse_address() -> None:
    assert parse_address("unix:///tmp/a.sock") == "/tmp/a.sock"
    assert parse_address("/tmp/a.sock") == "/tmp/a.sock"
    assert parse_address("tcp://127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_address("server.example:8081") == ("server.example", 8081)
    assert parse_address("[::1]:8081") == ("::1", 8081)
    assert parse_address(("10.0.0.1", 443)) == ("10.0.0.1", 443)
    for bad in ("unix://relative", "nohost", ":80", "h:0", "h:65536", "h:x"):
        with pytest.raises(InvalidArgument):
            parse_address(bad)


def test_open_channel_refuses_tls_without_identity_check() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(InvalidArgument, match="expected server SPIFFE ID"):
        open_channel("127.0.0.1:8081", ssl=ctx)
    with pytest.raises(InvalidArgument, match="Unix socket"):
        open_channel("/tmp/x.sock", ssl=ctx)
