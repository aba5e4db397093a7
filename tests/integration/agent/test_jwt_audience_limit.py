"""One JWT audience limit at both ends: through real server and agent processes, a workload
may ask for 32 audiences, and 33 are refused by the agent's Workload API itself (the server is
stopped by then) with the same status and message the server API gives, so a request never
passes one end to fail at the next."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import spiffeid_pb2
from plastron.proto.workload import workload_grpc
from plastron.proto.workload import workload_pb2 as pb
from plastron.wire.limits import MAX_JWT_AUDIENCES

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"
HEADER = {"workload.spiffe.io": "true"}


@pytest.fixture
def agent() -> Iterator[tuple[ServerProcess, AgentProcess]]:
    base = Path(tempfile.mkdtemp(prefix="paud-", dir="/tmp"))
    base.chmod(0o755)
    server = ServerProcess(base)
    agent: AgentProcess | None = None
    try:
        server.start()
        agent = AgentProcess(base, server)
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        agent.start(server.join_token(NODE))
        yield server, agent
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def audiences(n: int) -> list[str]:
    return [f"aud-{i}" for i in range(n)]


async def fetch_jwt(agent: AgentProcess, audience: list[str]) -> pb.JWTSVIDResponse | GRPCError:
    channel = Channel(path=agent.socket_path)
    try:
        stub = workload_grpc.SpiffeWorkloadAPIStub(channel)
        return await stub.FetchJWTSVID(
            pb.JWTSVIDRequest(audience=audience), metadata=HEADER, timeout=30
        )
    except GRPCError as exc:
        return exc
    finally:
        channel.close()


async def mint_jwt(server: ServerProcess, audience: list[str]) -> GRPCError | None:
    channel = Channel(path=server.socket_path)
    try:
        sid = spiffeid_pb2.SPIFFEID(trust_domain=TD, path="/workload")
        await svid_grpc.SVIDStub(channel).MintJWTSVID(
            svid_pb2.MintJWTSVIDRequest(id=sid, audience=audience), timeout=30
        )
        return None
    except GRPCError as exc:
        return exc
    finally:
        channel.close()


def test_33_audiences_are_refused_alike_by_agent_and_server(
    agent: tuple[ServerProcess, AgentProcess],
) -> None:
    server, workload_api = agent
    # the agent learns the workload's entry on its first sync
    poll(
        "workload entry synced",
        lambda: isinstance(asyncio.run(fetch_jwt(workload_api, ["one"])), pb.JWTSVIDResponse),
    )
    at_limit = asyncio.run(fetch_jwt(workload_api, audiences(MAX_JWT_AUDIENCES)))
    assert isinstance(at_limit, pb.JWTSVIDResponse), at_limit  # the server signed it
    assert len(at_limit.svids) == 1

    over = audiences(MAX_JWT_AUDIENCES + 1)
    from_server = asyncio.run(mint_jwt(server, over))
    # With the server gone, only the agent's own check can answer INVALID_ARGUMENT (a request
    # it passed on would end UNAVAILABLE).
    server.stop()
    from_agent = asyncio.run(fetch_jwt(workload_api, over))
    assert isinstance(from_agent, GRPCError) and from_server is not None
    expected = f"audience: {MAX_JWT_AUDIENCES + 1} values; at most {MAX_JWT_AUDIENCES} are allowed"
    assert (from_agent.status, from_agent.message) == (Status.INVALID_ARGUMENT, expected)
    assert (from_server.status, from_server.message) == (Status.INVALID_ARGUMENT, expected)
