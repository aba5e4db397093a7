"""A Workload API caller that connects, forks, and lets its child ask on the same connection.

Run as: ``fork_caller.py SOCKET MODE METHOD [SETUID_BINARY]``, usually under setpriv as an
unprivileged user. The parent (the process that called connect()) then, by MODE:

- ``stay``: waits for the child; the legitimate pattern (the connecting process is unchanged);
- ``exec``: exec()s SETUID_BINARY (same PID, euid 0 if it is setuid root) — the attack;
- ``exit``: exits, so the PID the agent recorded belongs to no running process.

The parent changes only once the agent has accepted the connection. The child waits until the
parent is in that state, fetches an SVID (METHOD ``x509``: the FetchX509SVID stream; ``jwt``:
unary FetchJWTSVID; ``sds``/``sds-rootca``: Envoy SDS StreamSecrets for "default"/"ROOTCA")
over the inherited connection and prints one JSON line (SDS ids: the certificate's SPIFFE ID,
or the name of a validation context):
{"connector": pid, "status": name, "ids": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from plastron.agent.sds.grpc_binding import SecretDiscoveryServiceStub
from plastron.agent.sds.resources import SECRET_TYPE_URL
from plastron.proto.workload import workload_pb2 as pb
from plastron.proto.workload.workload_grpc import SpiffeWorkloadAPIStub
from plastron.spiffe.x509svid import spiffe_id_from_certificate

DEADLINE = 30.0
METADATA = {"workload.spiffe.io": "true"}


class SocketChannel(Channel):  # type: ignore[misc]
    """A grpclib channel over an already connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(path="/unused")
        self._sock = sock

    async def _create_connection(self) -> Any:
        _, protocol = await self._loop.create_unix_connection(
            self._protocol_factory, sock=self._sock
        )
        return protocol


async def _fetch_x509(stub: SpiffeWorkloadAPIStub) -> list[str]:
    async with stub.FetchX509SVID.open(metadata=METADATA, timeout=10) as stream:
        await stream.send_message(pb.X509SVIDRequest(), end=True)
        msg: pb.X509SVIDResponse = await stream.recv_message()
        await stream.cancel()
    return [s.spiffe_id for s in msg.svids]


async def _fetch_jwt(stub: SpiffeWorkloadAPIStub) -> list[str]:
    request = pb.JWTSVIDRequest(audience=["test"])
    msg = await stub.FetchJWTSVID(request, metadata=METADATA, timeout=10)
    return [s.spiffe_id for s in msg.svids]


async def _fetch_sds(channel: Channel, name: str) -> list[str]:
    """What Envoy SDS streams first for ``name``: a TLS certificate's SPIFFE ID, or the name
    of a validation context."""
    stub = SecretDiscoveryServiceStub(channel)
    request = discovery_pb2.DiscoveryRequest(resource_names=[name], type_url=SECRET_TYPE_URL)
    async with stub.StreamSecrets.open(timeout=10) as stream:
        await stream.send_message(request)
        msg = await stream.recv_message()
        await stream.cancel()
    ids = []
    for resource in msg.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        if secret.HasField("validation_context"):
            ids.append(secret.name)
            continue
        chain = secret.tls_certificate.certificate_chain.inline_bytes
        ids.append(str(spiffe_id_from_certificate(x509.load_pem_x509_certificates(chain)[0])))
    return ids


async def fetch(sock: socket.socket, method: str) -> dict[str, Any]:
    channel = SocketChannel(sock)
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        if method.startswith("sds"):
            ids = await _fetch_sds(channel, "ROOTCA" if method == "sds-rootca" else "default")
        else:
            ids = await (_fetch_x509(stub) if method == "x509" else _fetch_jwt(stub))
        return {"status": "OK", "ids": ids}
    except GRPCError as exc:
        return {"status": exc.status.name, "ids": [], "message": exc.message}
    finally:
        channel.close()


def _effective_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            uid_line = next(line for line in fh if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None
    return int(uid_line.split()[2])


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return "gone"
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def wait_for_parent(parent: int, mode: str) -> None:
    """Poll (with a deadline) until the parent has exec'd the setuid binary or exited."""
    if mode == "stay":
        return
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if mode == "exec" and _effective_uid(parent) == 0:
            return
        if mode == "exit" and _state(parent) in ("Z", "X", "gone"):
            return
        time.sleep(0.01)
    raise SystemExit(f"parent {parent} never reached {mode!r}")


def child(sock: socket.socket, parent: int, mode: str, method: str) -> None:
    wait_for_parent(parent, mode)
    result = asyncio.run(fetch(sock, method))
    print(json.dumps({"connector": parent, **result}), flush=True)
    if mode == "exec":
        os.kill(parent, signal.SIGKILL)  # allowed: its real uid is still ours


def main() -> None:
    path, mode, method = sys.argv[1:4]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    # Wait until the agent has accepted (its HTTP/2 SETTINGS arrive; peeked, left for the
    # child's client), so the agent recorded the caller before it changes: the change must be
    # caught after attestation, not at accept.
    sock.recv(1, socket.MSG_PEEK)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            child(sock, parent, mode, method)
        finally:
            os._exit(0)
    if mode == "exec":
        setuid_binary = sys.argv[4]
        os.execv(setuid_binary, [setuid_binary, str(int(DEADLINE))])
    if mode == "stay":
        os.waitpid(pid, 0)
    # mode "exit": leave now; the child still holds the connection


if __name__ == "__main__":
    main()
