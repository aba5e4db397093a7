"""No API hands out an SVID for a reserved ID (the server's, an agent's, anything under /spire)
or for an empty path: a minted /spire/server SVID would pass every agent's check of the
server. Through the real admin socket and the agent's mTLS port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.records import RegistrationEntry, Selector

from .server_harness import TD, Harness, make_csr, running_server

RESERVED = ["/spire/server", "/spire/agent/join_token/abc", "/spire", "/spire/x/y"]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_server(tmp_path) as h:
        yield h


async def _refused(call: object) -> str:
    with pytest.raises(GRPCError) as err:
        await call  # type: ignore[misc]
    assert err.value.status == Status.INVALID_ARGUMENT, err.value
    return err.value.message or ""


@pytest.mark.parametrize("path", [*RESERVED, ""])
async def test_mint_refuses_reserved_and_empty_ids(harness: Harness, path: str) -> None:
    svid = harness.svid_stub(harness.local())
    key = ec.generate_private_key(ec.SECP256R1())
    uri = f"spiffe://example.org{path}"
    why = "reserved /spire namespace" if path else "has no path"
    x509_request = svid_pb2.MintX509SVIDRequest(csr=make_csr(key, uri))
    message = await _refused(svid.MintX509SVID(x509_request))
    assert uri in message and why in message
    jwt_request = svid_pb2.MintJWTSVIDRequest(
        id={"trust_domain": "example.org", "path": path}, audience=["a"]
    )
    message = await _refused(svid.MintJWTSVID(jwt_request))
    assert uri in message and why in message


async def test_mint_still_signs_a_near_miss_workload_path(harness: Harness) -> None:
    svid = harness.svid_stub(harness.local())
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await svid.MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, "spiffe://example.org/spire-server"))
    )
    assert resp.svid.id.path == "/spire-server"


async def test_entries_and_join_token_aliases_refuse_reserved_ids(harness: Harness) -> None:
    stub = harness.entry_stub(harness.local())
    bad = [
        types_entry.Entry(
            spiffe_id={"trust_domain": "example.org", "path": "/spire/server"},
            parent_id={"trust_domain": "example.org", "path": "/node"},
            selectors=[{"type": "unix", "value": "uid:0"}],
        ),
        types_entry.Entry(
            spiffe_id={"trust_domain": "example.org", "path": "/w"},
            parent_id={"trust_domain": "example.org", "path": ""},
            selectors=[{"type": "unix", "value": "uid:0"}],
        ),
    ]
    resp = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=bad))
    assert [r.status.code for r in resp.results] == [Status.INVALID_ARGUMENT.value] * 2
    assert "reserved /spire namespace" in resp.results[0].status.message
    assert "entry.parent_id" in resp.results[1].status.message
    agents = agent_grpc.AgentStub(harness.local())
    message = await _refused(
        agents.CreateJoinToken(
            agent_pb2.CreateJoinTokenRequest(
                ttl=60, agent_id={"trust_domain": "example.org", "path": "/spire/server"}
            )
        )
    )
    assert "agent_id" in message and "reserved" in message
    count = await stub.CountEntries(entry_pb2.CountEntriesRequest())
    assert count.count == 0


async def test_an_agent_gets_no_svid_for_a_stored_entry_with_a_reserved_id(
    harness: Harness,
) -> None:
    """An entry row that predates the API check (or was written around it) still yields no
    server SVID: the CA itself refuses, for X509 and JWT alike."""
    token = await harness.join_token()
    agent = await harness.attest(token)
    datastore, api = harness.server.datastore, harness.server.api
    assert datastore is not None and api is not None
    stored = await datastore.create_entry(
        RegistrationEntry(
            entry_id="",
            spiffe_id=TD.spiffe_id("/spire/server"),
            parent_id=agent.spiffe_id,
            selectors=(Selector("unix", "uid:0"),),
        )
    )
    await api.on_change()
    svid = harness.svid_stub(await harness.tls(agent))
    key = ec.generate_private_key(ec.SECP256R1())
    params = [{"entry_id": stored.entry_id, "csr": make_csr(key)}]
    resp = await svid.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=params))
    [result] = resp.results
    assert result.status.code == Status.INVALID_ARGUMENT.value, result
    assert "reserved /spire namespace" in result.status.message
    assert not result.svid.cert_chain
    message = await _refused(
        svid.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(entry_id=stored.entry_id, audience=["a"]))
    )
    assert "reserved /spire namespace" in message
