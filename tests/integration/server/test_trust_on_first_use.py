"""Trust on first use in the server's AttestAgent: an agent ID whose method does not allow
re-attestation is admitted once, until an operator evicts it; two concurrent attestations of
the same instance admit exactly one. Re-attestable methods are unaffected.

The attestors here are real ServerNodeAttestor implementations defined by the test (a method
whose payload names the instance), installed on a real in-process server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.attestors.base import AttestationResult, ChallengeFn
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.spiffe.ids import SpiffeId
from plastron.wire.ids import spiffe_id_to_proto

from .server_harness import Harness, attest_params, make_csr, running_server


class _InstanceAttestor:
    """Admits the instance its payload names; ``gate`` holds every attempt until both of two
    concurrent ones have been verified, so they reach the node write together."""

    def __init__(self, name: str, *, can_reattest: bool, gate: asyncio.Barrier | None = None):
        self.name = name
        self._can_reattest = can_reattest
        self._gate = gate

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        if self._gate is not None:
            await self._gate.wait()
        return AttestationResult(
            agent_id=SpiffeId.parse(
                f"spiffe://example.org/spire/agent/{self.name}/{payload.decode()}"
            ),
            can_reattest=self._can_reattest,
        )


@pytest.fixture
async def harness(tmp_path: Path):
    async with running_server(tmp_path) as h:
        yield h


async def _attest(h: Harness, kind: str, instance: str) -> agent_pb2.AttestAgentResponse:
    stub = agent_grpc.AgentStub(await h.tls())
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()))
    async with stub.AttestAgent.open() as stream:
        await stream.send_message(attest_params(kind, instance.encode(), csr))
        resp = await stream.recv_message()
        await stream.end()
    assert resp is not None
    return resp


async def _nodes(h: Harness) -> list[tuple[str, str]]:
    resp = await agent_grpc.AgentStub(h.local()).ListAgents(agent_pb2.ListAgentsRequest())
    return sorted((a.id.path, a.x509svid_serial_number) for a in resp.agents)


def _install(h: Harness, attestor: _InstanceAttestor) -> None:
    assert h.server.api is not None
    h.server.api.attestors[attestor.name] = attestor


async def test_second_attestation_of_a_non_reattestable_agent_is_refused(harness: Harness) -> None:
    _install(harness, _InstanceAttestor("once", can_reattest=False))
    first = await _attest(harness, "once", "vm-1")
    assert first.result.svid.id.path == "/spire/agent/once/vm-1"
    assert not first.result.reattestable
    before = await _nodes(harness)
    with pytest.raises(GRPCError) as err:
        await _attest(harness, "once", "vm-1")
    assert err.value.status == Status.PERMISSION_DENIED
    assert err.value.message == (
        "once: agent spiffe://example.org/spire/agent/once/vm-1 has already attested and its "
        "method does not allow re-attestation; evict the agent to attest it again"
    )
    assert await _nodes(harness) == before  # the first SVID's serial is still the node's
    # evicted, the instance may attest again
    await agent_grpc.AgentStub(harness.local()).DeleteAgent(
        agent_pb2.DeleteAgentRequest(
            id={"trust_domain": "example.org", "path": "/spire/agent/once/vm-1"}
        )
    )
    again = await _attest(harness, "once", "vm-1")
    assert again.result.svid.id.path == "/spire/agent/once/vm-1"


async def test_concurrent_attestations_of_one_instance_admit_exactly_one(harness: Harness) -> None:
    _install(harness, _InstanceAttestor("race", can_reattest=False, gate=asyncio.Barrier(2)))
    outcomes = await asyncio.gather(
        _attest(harness, "race", "vm-2"), _attest(harness, "race", "vm-2"), return_exceptions=True
    )
    admitted = [o for o in outcomes if isinstance(o, agent_pb2.AttestAgentResponse)]
    refused = [o for o in outcomes if isinstance(o, GRPCError)]
    assert len(admitted) == 1 and len(refused) == 1, outcomes
    assert refused[0].status == Status.PERMISSION_DENIED
    assert "has already attested" in (refused[0].message or "")
    leaf = x509.load_der_x509_certificate(admitted[0].result.svid.cert_chain[0])
    # the node record is the admitted agent's: its SVID is the one the server answers for
    assert await _nodes(harness) == [("/spire/agent/race/vm-2", str(leaf.serial_number))]


async def test_reattestable_agent_attests_again(harness: Harness) -> None:
    _install(harness, _InstanceAttestor("again", can_reattest=True))
    await _attest(harness, "again", "vm-3")
    second = await _attest(harness, "again", "vm-3")
    assert second.result.reattestable
    assert [p for p, _ in await _nodes(harness)] == ["/spire/agent/again/vm-3"]


async def test_a_ban_landing_while_the_svid_is_signed_is_not_undone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ban check and the node write are one transaction: a ban committed while the agent's
    re-attestation is being signed refuses that attestation instead of being overwritten."""
    _install(harness, _InstanceAttestor("banme", can_reattest=True))
    await _attest(harness, "banme", "vm-4")
    ctx = harness.server.api
    assert ctx is not None
    sign = ctx.ca.sign_agent_x509_svid
    agent_id = SpiffeId.parse("spiffe://example.org/spire/agent/banme/vm-4")

    async def ban_then_sign(**kwargs: Any) -> list[x509.Certificate]:
        await agent_grpc.AgentStub(harness.local()).BanAgent(
            agent_pb2.BanAgentRequest(id=spiffe_id_to_proto(agent_id))
        )
        return await sign(**kwargs)

    monkeypatch.setattr(ctx.ca, "sign_agent_x509_svid", ban_then_sign)
    with pytest.raises(GRPCError) as err:
        await _attest(harness, "banme", "vm-4")
    assert err.value.status == Status.PERMISSION_DENIED
    assert "is banned" in (err.value.message or "")
    assert await _nodes(harness) == [("/spire/agent/banme/vm-4", "")]
