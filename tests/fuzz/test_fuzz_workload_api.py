"""Bad input at the Workload API (and Envoy SDS on the same socket), through one real
``plastron-server run`` and one real ``plastron-agent run`` (attested with a join token, one
entry for this uid): every method with request messages generated from their descriptors and
with non-protobuf bytes, with and without the security header; FetchJWTSVID with generated
audiences and SPIFFE IDs; ValidateJWTSVID with generated audiences and tokens (a real JWT-SVID
from this agent, edited, forged or random).

Every call must end OK or with a status other than INTERNAL and UNKNOWN, carrying a message; a
rejected call must leave the server's datastore as it was; at the end agent and server are
healthy and neither has logged an internal error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from envoy.service.secret.v3 import sds_pb2
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import given
from hypothesis import strategies as st

from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.workload import workload_grpc, workload_pb2
from tests.conformance.nodeattestor_env import short_tmp
from tests.fuzz.fuzzing import check_status, fuzz_settings, json_values, mutated
from tests.fuzz.grpc_driver import RawClient, RawCodec, sqlite_dump
from tests.fuzz.protobuf_strategies import INTERESTING_TEXT, Method, messages, methods_of
from tests.integration.agent.agent_processes import AgentProcess, ServerProcess
from tests.processes import poll

METHODS = methods_of(
    [
        workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"],
        sds_pb2.DESCRIPTOR.services_by_name["SecretDiscoveryService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
)
BY_NAME = {m.name: m for m in METHODS}
WORKLOAD_ID = "spiffe://example.org/fuzz/workload"
HEADER = {"workload.spiffe.io": "true"}
headers = st.sampled_from(
    [HEADER, HEADER, HEADER, {}, {"workload.spiffe.io": "false"}, {"workload.spiffe.io": "TRUE "}]
)


@dataclass
class FuzzAgent:
    server: ServerProcess
    agent: AgentProcess
    db: Path
    client: RawClient
    jwt: str  # a real JWT-SVID for WORKLOAD_ID, audience "fuzz"


def _fetch_jwt(loop: asyncio.AbstractEventLoop, socket_path: str) -> str | None:
    """The agent's JWT-SVID for WORKLOAD_ID (audience "fuzz"), or None until it has synced."""

    async def fetch() -> str | None:
        channel = Channel(path=socket_path)
        try:
            resp = await workload_grpc.SpiffeWorkloadAPIStub(channel).FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=["fuzz"], spiffe_id=WORKLOAD_ID),
                metadata=HEADER,
                timeout=10,
            )
            return str(resp.svids[0].svid) if resp.svids else None
        except GRPCError:  # no identity yet: polled again
            return None
        finally:
            channel.close()

    return loop.run_until_complete(fetch())


@pytest.fixture(scope="module")
def agent() -> Iterator[FuzzAgent]:
    base = short_tmp("pt-fw-")
    base.chmod(0o755)
    server = ServerProcess(base)
    loop = asyncio.new_event_loop()
    processes: list[ServerProcess | AgentProcess] = [server]
    client: RawClient | None = None
    try:
        server.start()
        token = server.join_token()
        parent = f"spiffe://example.org/spire/agent/join_token/{token}"
        server.create_entry(parent, WORKLOAD_ID, f"unix:uid:{os.geteuid()}")
        agent = AgentProcess(base, server)  # reads the server's bundle
        processes.append(agent)
        agent.start(token)
        client = RawClient(loop, lambda: Channel(path=agent.socket_path, codec=RawCodec()))
        jwt = poll("a JWT-SVID from the agent", lambda: _fetch_jwt(loop, agent.socket_path))
        yield FuzzAgent(server, agent, base / "server-data" / "ds.sqlite3", client, jwt)
    finally:
        if client is not None:
            client.close()
        loop.close()
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(base, ignore_errors=True)


def _call_and_check(
    agent: FuzzAgent, method: Method, body: object, metadata: dict[str, str]
) -> None:
    before = sqlite_dump(agent.db)
    out = agent.client.call(method.path, body, streaming=method.streaming, metadata=metadata)  # type: ignore[arg-type]
    if not check_status(f"Workload API {method.name}", out.status, out.message):
        assert sqlite_dump(agent.db) == before, (
            f"{method.path}: rejected call changed the datastore"
        )


@fuzz_settings(12)
@given(data=st.data())
def any_request(agent: FuzzAgent, method: Method, data: st.DataObject) -> None:
    body = data.draw(messages(method.request) | st.binary(max_size=200), label="request")
    _call_and_check(agent, method, body, data.draw(headers, label="metadata"))


audiences = st.lists(st.sampled_from(["fuzz", "", "x" * 1025]) | st.text(max_size=30), max_size=40)


@fuzz_settings(60)
@given(
    audience=audiences,
    spiffe_id=st.sampled_from([WORKLOAD_ID, "", "spiffe://example.org/other"])
    | st.sampled_from(INTERESTING_TEXT)
    | st.text(max_size=40),
    metadata=headers,
)
def fetch_jwt_svid(
    agent: FuzzAgent, audience: list[str], spiffe_id: str, metadata: dict[str, str]
) -> None:
    request = workload_pb2.JWTSVIDRequest(audience=audience, spiffe_id=spiffe_id)
    _call_and_check(agent, BY_NAME["FetchJWTSVID"], request, metadata)


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def tokens(real: str) -> st.SearchStrategy[str]:
    head, body, sig = real.split(".")
    forged = st.builds(
        lambda h, c, s: f"{h}.{c}.{s}",
        st.sampled_from([head, _b64url({"alg": "none", "typ": "JWT"})]) | json_values.map(_b64url),
        st.sampled_from([body]) | json_values.map(_b64url),
        st.sampled_from([sig, ""]) | st.text(max_size=20),
    )
    edited = mutated([real.encode()]).map(lambda b: b.decode("latin-1"))
    return st.sampled_from([real]) | forged | edited | st.text(max_size=100)


@fuzz_settings(60)
@given(data=st.data())
def validate_jwt_svid(agent: FuzzAgent, data: st.DataObject) -> None:
    request = workload_pb2.ValidateJWTSVIDRequest(
        audience=data.draw(st.sampled_from(["fuzz", "other", ""]) | st.text(max_size=20)),
        svid=data.draw(tokens(agent.jwt), label="svid"),
    )
    _call_and_check(agent, BY_NAME["ValidateJWTSVID"], request, data.draw(headers))


def health_refuses_a_request_that_is_no_message(agent: FuzzAgent) -> None:
    """Found by this suite: the agent's health service let grpclib answer UNKNOWN (and log a
    traceback) for bytes that are no HealthCheckRequest; any local user can send them."""
    for name in ("Check", "List", "Watch"):
        out = agent.client.call(BY_NAME[name].path, b"\x00", streaming=BY_NAME[name].streaming)
        assert out.status == Status.INVALID_ARGUMENT, (name, out)
        assert out.message.startswith("request is not a valid message"), (name, out)


def test_workload_api_bad_input(agent: FuzzAgent) -> None:
    """One test, so that one agent (and server) takes every input and their health is checked
    after all of them (pytest-xdist may split a module's tests over workers)."""
    health_refuses_a_request_that_is_no_message(agent)
    for method in METHODS:
        any_request(agent, method)
    fetch_jwt_svid(agent)
    validate_jwt_svid(agent)
    assert agent.agent.cli("healthcheck").returncode == 0, agent.agent.log_text()
    assert agent.server.cli("healthcheck", check=False).returncode == 0
    for log in (agent.agent.log_text(), agent.server.proc.log_path.read_text(errors="replace")):
        assert "Traceback" not in log and "internal error" not in log, log[-4000:]
