"""Envoy SDS v3 from a real agent and server over the agent's socket, driven by xds-protos'
grpcio client as Envoy would: initial fetch, FetchSecrets, rotation push, NACK then retry, an
unknown resource, two Envoy nodes on one connection, a caller with no entry, DeltaSecrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agent_authority import TestAuthority
from agent_processes import TD, AgentProcess, ServerProcess, poll
from cryptography import x509
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from sds_envoy import (
    WAIT,
    SdsStream,
    channel,
    fetch,
    node,
    request,
    secrets,
    spiffe_validator,
    tls_certificate,
    trusted_ca,
)

from plastron.agent.sds.resources import SECRET_TYPE_URL
from plastron.clock import SystemClock

NODE = f"spiffe://{TD}/node"
ENVOY = f"spiffe://{TD}/envoy"
ROTATING = f"spiffe://{TD}/rotating"  # 15 s TTL (25 s with the backdating): rotates every ~3 s
OTHER_TD = "other.org"
NOBODY = 65534
FORK_CALLER = Path(__file__).with_name("fork_caller.py")


@dataclass
class Env:
    server: ServerProcess
    agent: AgentProcess
    own_pem: bytes
    other_pem: bytes

    @property
    def socket(self) -> str:
        return self.agent.socket_path


def _federate(server: ServerProcess, base: Path) -> bytes:
    """A federated bundle for other.org in the server; its PEM."""
    other = TestAuthority(OTHER_TD, SystemClock().now() - dt.timedelta(seconds=10))
    pem = other.bundle.to_pem()
    (base / "other.pem").write_bytes(pem)
    server.cli("bundle", "set", "-id", f"spiffe://{OTHER_TD}", "-path", str(base / "other.pem"))
    return pem


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="psds-", dir="/tmp"))
    base.chmod(0o755)
    # Separate directories: the server may tighten its admin socket's; uid 65534 must reach
    # the agent's socket.
    (base / "s").mkdir()
    (base / "a").mkdir(mode=0o755)
    server = ServerProcess(base / "s")
    server.start()
    agent = AgentProcess(base / "a", server)
    try:
        other_pem = _federate(server, base / "s")
        uid = agent.uid_selector
        server.cli(
            "entry", "create", "-parentID", NODE, "-spiffeID", ENVOY, "-selector", uid,
            "-federatesWith", f"spiffe://{OTHER_TD}",
        )  # fmt: skip
        server.cli(
            "entry", "create", "-parentID", NODE, "-spiffeID", ROTATING, "-selector", uid,
            "-x509SVIDTTL", "15",
        )  # fmt: skip
        agent.start(server.join_token(NODE))
        own_pem = server.cli("bundle", "show").stdout.encode()
        ready = Env(server, agent, own_pem, other_pem)
        everything = request([ENVOY, ROTATING, f"spiffe://{OTHER_TD}"])
        poll("entries, SVIDs and the federated bundle synced", lambda: _fetch(ready, everything))
        yield ready
    finally:
        agent.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _fetch(env: Env, msg: discovery_pb2.DiscoveryRequest) -> discovery_pb2.DiscoveryResponse:
    return asyncio.run(fetch(env.socket, msg))


def _issued_by(leaf: x509.Certificate, bundle_pem: bytes) -> bool:
    for ca in x509.load_pem_x509_certificates(bundle_pem):
        try:
            leaf.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, x509.InvalidSignature):
            continue
    return False


async def test_initial_fetch_on_a_stream(env: Env) -> None:
    names = [ENVOY, "default", "ROOTCA", "ALL", f"spiffe://{OTHER_TD}"]
    async with channel(env.socket) as chan:
        stream = SdsStream(chan)
        await stream.send(request(names, node_msg=node("envoy-a")))
        response = await stream.recv()
        stream.cancel()
    assert (response.version_info, response.type_url) == ("1", SECRET_TYPE_URL)
    assert response.nonce
    found = secrets(response)
    assert list(found) == names
    envoy = tls_certificate(found[ENVOY])
    assert envoy.spiffe_id == ENVOY
    assert _issued_by(envoy.chain[-1], env.own_pem)
    assert tls_certificate(found["default"]).spiffe_id == ENVOY  # first entry by SPIFFE ID
    assert spiffe_validator(found["ROOTCA"]) == {TD: env.own_pem}
    assert spiffe_validator(found[f"spiffe://{OTHER_TD}"]) == {OTHER_TD: env.other_pem}
    assert list(spiffe_validator(found["ALL"]).items()) == [
        (TD, env.own_pem),
        (OTHER_TD, env.other_pem),
    ]


def test_fetch_secrets_unary(env: Env) -> None:
    response = _fetch(env, request(["default", f"spiffe://{TD}"]))
    assert (response.version_info, response.nonce) == ("", "")
    found = secrets(response)
    assert tls_certificate(found["default"]).spiffe_id == ENVOY
    assert spiffe_validator(found[f"spiffe://{TD}"]) == {TD: env.own_pem}


def _serial(response: discovery_pb2.DiscoveryResponse) -> int:
    return tls_certificate(secrets(response)[ROTATING]).chain[0].serial_number


async def test_rotation_is_pushed_as_the_next_version(env: Env) -> None:
    async with channel(env.socket) as chan:
        stream = SdsStream(chan)
        await stream.send(request([ROTATING], node_msg=node("envoy-a")))
        first = await stream.recv()
        await stream.ack(first, [ROTATING])
        rotated = await stream.recv()
        stream.cancel()
    assert (first.version_info, rotated.version_info) == ("1", "2")
    assert _serial(rotated) != _serial(first)


async def test_nack_then_the_next_change_is_sent(env: Env) -> None:
    async with channel(env.socket) as chan:
        stream = SdsStream(chan)
        await stream.send(request([ROTATING], node_msg=node("envoy-a")))
        first = await stream.recv()
        await stream.send(request([ROTATING], nonce=first.nonce, error="cannot load key"))
        retry = await stream.recv()
        await stream.ack(retry, [ROTATING])
        stream.cancel()
    # not the rejected state again, but the next one
    assert retry.version_info == "2"
    assert _serial(retry) != _serial(first)
    logged = 'msg="Envoy rejected SDS version"'
    fields = 'node=envoy-a version=1 kept="" error="cannot load key"'
    assert any(
        logged in line and line.endswith(fields) for line in env.agent.log_text().splitlines()
    ), env.agent.log_text()


async def test_unknown_resource_is_refused(env: Env) -> None:
    unknown = f"spiffe://{TD}/not-mine"
    expected = f"workload is not authorized for the requested resources: {unknown!r}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await fetch(env.socket, request([ENVOY, unknown]))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    async with channel(env.socket) as chan:
        stream = SdsStream(chan)
        await stream.send(request([unknown], node_msg=node("envoy-a")))
        error = await stream.error()
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)


async def test_two_envoy_nodes_on_one_connection(env: Env) -> None:
    """Two streams on one channel (one connection), distinct nodes: each gets its own nonces,
    its own validation-context kind, and its own push on rotation."""
    names = ["ROOTCA", ROTATING]
    async with channel(env.socket) as chan:
        a, b = SdsStream(chan), SdsStream(chan)
        await a.send(request(names, node_msg=node("envoy-a")))
        await b.send(request(names, node_msg=node("envoy-b", disable_validator=True)))
        first_a, first_b = await a.recv(), await b.recv()
        assert first_a.nonce != first_b.nonce
        assert spiffe_validator(secrets(first_a)["ROOTCA"]) == {TD: env.own_pem}
        assert trusted_ca(secrets(first_b)["ROOTCA"]) == env.own_pem
        await a.ack(first_a, names)
        await b.ack(first_b, names)
        second_a, second_b = await a.recv(), await b.recv()
        a.cancel()
        b.cancel()
    assert (second_a.version_info, second_b.version_info) == ("2", "2")
    assert _serial(second_a) != _serial(first_a)
    assert _serial(second_b) != _serial(first_b)


async def test_delta_secrets_is_unimplemented(env: Env) -> None:
    async with channel(env.socket) as chan:
        call = sds_pb2_grpc.SecretDiscoveryServiceStub(chan).DeltaSecrets()
        # The agent ends the call on its headers alone. Writing a request would race that
        # end: a write that loses it fails inside grpcio as INTERNAL ("execute_batch").
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "use StreamSecrets" in (err.value.details() or "")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to call as another user")
def test_caller_with_no_entry_is_denied(env: Env) -> None:
    """uid 65534 has no entry: its StreamSecrets, even for the bundle alone, is refused
    PermissionDenied, as its Workload API calls are (SPIRE's SDS would serve it bundles)."""
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    out = subprocess.run(
        [*as_nobody, sys.executable, str(FORK_CALLER), env.socket, "stay", "sds-rootca"],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
    )
    lines = out.stdout.strip().splitlines()
    assert lines, f"fork_caller printed nothing: {out.stderr}"
    result = json.loads(lines[-1])
    assert (result["status"], result.get("message")) == ("PERMISSION_DENIED", "no identity issued")
