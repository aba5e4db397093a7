"""x509pop in "spiffe" mode through the real server: the node proves an X509-SVID issued by this
trust domain under the exchange prefix; the server chains it to its own bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.attestors.x509pop.agent import X509PopAgentAttestor
from plastron.attestors.x509pop.config import X509PopAgentConfig
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_pb2

from .server_harness import attest_params, make_csr, running_server


async def mint_node_svid(h, tmp: Path, path: str) -> X509PopAgentAttestor:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await h.svid_stub(h.local()).MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, f"spiffe://example.org{path}"))
    )
    leaf = x509.load_der_x509_certificate(resp.svid.cert_chain[0])
    (tmp / "node.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "node.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return X509PopAgentAttestor(
        X509PopAgentConfig(certificate_path=tmp / "node.pem", private_key_path=tmp / "node.key")
    )


async def attest(h, agent: X509PopAgentAttestor) -> agent_pb2.AttestAgentResponse:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    stub = agent_grpc.AgentStub(await h.tls())
    async with stub.AttestAgent.open() as stream:
        await stream.send_message(attest_params("x509pop", await agent.payload(), make_csr(key)))
        while True:
            resp = await stream.recv_message()
            assert resp is not None
            if resp.WhichOneof("step") == "result":
                await stream.end()
                return resp
            answer = await agent.answer(resp.challenge)
            await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))


async def test_spiffe_mode_attests_svid_under_prefix(tmp_path: Path) -> None:
    plugins = 'NodeAttestor "x509pop" { plugin_data { mode = "spiffe" } }'
    async with running_server(tmp_path, extra_plugins=plugins) as h:
        agent = await mint_node_svid(h, tmp_path, "/spire-exchange/node-1")
        resp = await attest(h, agent)
        assert resp.result.svid.id.path.startswith("/spire/agent/x509pop/")
        assert resp.result.reattestable
        # an SVID outside the exchange prefix is refused, with no node record
        outsider = await mint_node_svid(h, tmp_path, "/workload/web")
        with pytest.raises(GRPCError) as err:
            await attest(h, outsider)
        assert err.value.status == Status.PERMISSION_DENIED
        count = await agent_grpc.AgentStub(h.local()).CountAgents(agent_pb2.CountAgentsRequest())
        assert count.count == 1
