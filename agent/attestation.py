"""Node attestation client: the AttestAgent stream, driven by a NodeAttestor's agent half.

params{data, csr} → any number of challenge/challenge_response rounds → result{svid,
reattestable}. The returned SVID must certify our key and name an agent of our trust domain;
its chain is checked against the bundle fetched right after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from plastron.agent.server_client import CALL_TIMEOUT, ServerClient
from plastron.agent.wire import chain_from_proto, csr_der, svid_with_key
from plastron.attestors.base import MAX_ATTESTATION_MESSAGE, AgentNodeAttestor
from plastron.clock import Clock
from plastron.errors import AttestationFailed
from plastron.keymanager import KeyManager, KeyType
from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.proto.spire.api.server.agent.v1.agent_grpc import AgentStub
from plastron.proto.spire.api.types import attestation_pb2
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import X509Svid, validate_x509_svid

log = logging.getLogger("plastron.agent.attestation")
MAX_CHALLENGE_ROUNDS = 32


@dataclass(frozen=True)
class AttestedAgent:
    svid: X509Svid
    key_id: str
    bundle: Bundle
    reattestable: bool


def check_agent_svid(svid: X509Svid, bundle: Bundle, clock: Clock) -> None:
    """The agent SVID names an agent of our trust domain and chains to our bundle."""
    td = bundle.trust_domain
    if not svid.spiffe_id.member_of(td) or not svid.spiffe_id.path.startswith("/spire/agent/"):
        raise AttestationFailed(f"server issued {svid.spiffe_id}, not an agent ID of {td}")
    validate_x509_svid(svid.chain, bundle.x509_certificates(), clock.now())


async def _exchange(client: ServerClient, attestor: AgentNodeAttestor, csr: bytes) -> Any:
    payload = await attestor.payload()
    params = agent_pb2.AttestAgentRequest.Params(
        data=attestation_pb2.AttestationData(type=attestor.name, payload=payload),
        params=agent_pb2.AgentX509SVIDParams(csr=csr),
    )
    stub = AgentStub(client.channel())
    async with stub.AttestAgent.open(timeout=CALL_TIMEOUT) as stream:
        await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
        for _ in range(MAX_CHALLENGE_ROUNDS + 1):
            response = await stream.recv_message()
            if response is None:
                # The server's refusal comes in the trailers: raise it with its real reason.
                await stream.end()
                await stream.recv_trailing_metadata()
                raise AttestationFailed("attestation: server ended the stream without a result")
            step = response.WhichOneof("step")
            if step == "result":
                await stream.end()
                return response.result
            if step != "challenge" or len(response.challenge) > MAX_ATTESTATION_MESSAGE:
                raise AttestationFailed(f"attestation: unexpected server message ({step})")
            answer = await attestor.answer(bytes(response.challenge))
            await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))
    raise AttestationFailed(f"attestation: more than {MAX_CHALLENGE_ROUNDS} challenge rounds")


async def attest_node(
    client: ServerClient,
    attestor: AgentNodeAttestor,
    key_manager: KeyManager,
    key_id: str,
    clock: Clock,
) -> AttestedAgent:
    """Attest with a fresh key in ``key_id``; return the verified SVID and the bundle."""
    key_manager.generate_key(key_id, KeyType.EC_P256)
    key = key_manager.signer(key_id)
    client.set_identity(None, None)
    result = await _exchange(client, attestor, csr_der(key))
    svid = svid_with_key(chain_from_proto(result.svid), key)
    # Fetch the bundle with our new identity over the server-verified channel.
    client.set_identity(svid.chain, key)
    bundle = await client.get_bundle()
    check_agent_svid(svid, bundle, clock)
    log.info(
        "node attestation succeeded spiffe_id=%s method=%s reattestable=%s",
        svid.spiffe_id,
        attestor.name,
        result.reattestable,
    )
    return AttestedAgent(svid, key_id, bundle, bool(result.reattestable))
