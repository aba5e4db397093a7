"""The AttestAgent exchange (docs/architecture.md, "Attestation"), kept apart from the rest
of the Agent service.

params → any number of challenge/challenge_response rounds → result. Every wait for the agent
has a deadline; an agent that stops answering gets DEADLINE_EXCEEDED and the server task ends.
Nothing is written until the method's checks passed and the SVID is signed; the node record
and its selectors (and the method's node data) are then written in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from plastron.attestors.base import (
    MAX_ATTESTATION_MESSAGE,
    AttestationResult,
    attests_unique_nodes,
)
from plastron.errors import (
    AttestationFailed,
    FailedPrecondition,
    InvalidArgument,
    NotAuthorized,
    PlastronError,
)
from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.records import AttestedNode
from plastron.server.api.audit import add_audit_fields
from plastron.server.api.authz import current_caller
from plastron.server.api.context import ApiContext
from plastron.server.ca.csr import csr_public_key, parse_csr
from plastron.server.metrics import NODE_ATTESTATIONS
from plastron.spiffe.ids import server_id
from plastron.wire.svids import x509_svid_to_proto

log = logging.getLogger(__name__)
MAX_TYPE_LENGTH = 128


async def _recv(stream: Stream[Any, Any], timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(stream.recv_message(), timeout)
    except TimeoutError:
        raise GRPCError(
            Status.DEADLINE_EXCEEDED, f"attestation: {what} not received within {timeout:g}s"
        ) from None


async def attest_agent(ctx: ApiContext, stream: Stream[Any, Any]) -> None:
    caller = current_caller()
    await ctx.attest_limiter.wait(caller.host)
    first = await _recv(stream, ctx.challenge_timeout, "attestation parameters")
    if first is None or first.WhichOneof("step") != "params":
        raise InvalidArgument("params: the first message must carry attestation parameters")
    data = first.params.data
    if not data.type:
        raise InvalidArgument("params.data.type: missing attestation data type")
    if len(data.type) > MAX_TYPE_LENGTH:
        raise InvalidArgument("params.data.type: too long")
    if not data.payload:
        raise InvalidArgument("params.data.payload: missing attestation data payload")
    if len(data.payload) > MAX_ATTESTATION_MESSAGE:
        raise InvalidArgument(f"params.data.payload: larger than {MAX_ATTESTATION_MESSAGE} bytes")
    csr = parse_csr(first.params.params.csr, "params.params.csr")
    public_key = csr_public_key(csr, "params.params.csr")
    attestor = ctx.attestors.get(data.type)
    if attestor is None:
        raise FailedPrecondition(
            f"params.data.type: unknown attestation type {data.type!r}; "
            f"this server accepts {', '.join(sorted(ctx.attestors)) or 'none'}"
        )

    async def challenge(blob: bytes) -> bytes:
        if len(blob) > MAX_ATTESTATION_MESSAGE:
            raise AttestationFailed(f"{data.type}: challenge larger than the protocol allows")
        await stream.send_message(agent_pb2.AttestAgentResponse(challenge=blob))
        msg = await _recv(stream, ctx.challenge_timeout, "challenge response")
        if msg is None or msg.WhichOneof("step") != "challenge_response":
            raise InvalidArgument("challenge_response: expected a challenge response")
        if len(msg.challenge_response) > MAX_ATTESTATION_MESSAGE:
            raise InvalidArgument(
                f"challenge_response: larger than {MAX_ATTESTATION_MESSAGE} bytes"
            )
        return bytes(msg.challenge_response)

    with _counted(data.type):
        try:
            result = await attestor.attest(bytes(data.payload), challenge)
        except Exception as exc:
            # Operators need to see refusals; the message names the rule, never a secret.
            log.warning(
                "attestation refused type=%s peer=%s reason=%s", data.type, caller.host, exc
            )
            raise
        ttl = 0 if attests_unique_nodes(attestor) else ctx.non_unique_agent_ttl
        node = await _admit(ctx, data.type, result, public_key, ttl=ttl)
        chain = node[1]
        await stream.send_message(
            agent_pb2.AttestAgentResponse(
                result=agent_pb2.AttestAgentResponse.Result(
                    svid=x509_svid_to_proto(chain, result.agent_id),
                    reattestable=result.can_reattest,
                )
            )
        )


@contextlib.contextmanager
def _counted(method: str) -> Iterator[None]:
    """One attestation in the metrics: success, refused (the attestor, a rule or the caller
    said no) or error (the server failed)."""
    outcome = "error"
    try:
        yield
        outcome = "success"
    except (PlastronError, GRPCError):
        outcome = "refused"
        raise
    finally:
        NODE_ATTESTATIONS.labels(method, outcome).inc()


async def _admit(
    ctx: ApiContext,
    attestation_type: str,
    result: AttestationResult,
    public_key: Any,
    *,
    ttl: int = 0,
) -> tuple[AttestedNode, list[Any]]:
    """Write the node record and sign its agent SVID (``ttl`` seconds; 0: agent_ttl)."""
    agent_id = result.agent_id
    if not agent_id.member_of(ctx.trust_domain):
        raise AttestationFailed(
            f"{attestation_type}: agent ID {agent_id} is not in trust domain {ctx.trust_domain}"
        )
    if agent_id == server_id(ctx.trust_domain):
        raise AttestationFailed(f"{attestation_type}: agent ID may not be the server's ID")
    if not agent_id.path.startswith(f"/spire/agent/{attestation_type}/"):
        log.warning(
            "agent ID is not in the attestor's namespace agent_id=%s type=%s",
            agent_id,
            attestation_type,
        )
    # Signed before the node is read: the ban and re-attestation checks then run in the
    # write's own transaction (one datastore round trip, and a ban landing between a check
    # and the write cannot be overwritten). A refused agent's SVID is dropped unsent.
    chain = await ctx.ca.sign_agent_x509_svid(spiffe_id=agent_id, public_key=public_key, ttl=ttl)
    leaf = chain[0]
    serial, not_after = str(leaf.serial_number), int(leaf.not_valid_after_utc.timestamp())

    def decide(existing: AttestedNode | None) -> AttestedNode:
        if existing is not None and existing.cert_serial == "":
            raise NotAuthorized(f"failed to attest: agent {agent_id} is banned")
        if existing is not None and not result.can_reattest:
            # trust on first use: only the first of two concurrent attestations writes
            raise _already_attested(attestation_type, agent_id)
        return AttestedNode(
            spiffe_id=agent_id,
            attestation_type=attestation_type,
            cert_serial=serial,
            cert_not_after=not_after,
            can_reattest=result.can_reattest,
            agent_version=existing.agent_version if existing else "",
            node_data=result.node_data,
            selectors=tuple(sorted(set(result.selectors))),
        )

    node = await ctx.datastore.admit_attested_node(agent_id, decide)
    ctx.cache.set_node_selectors(agent_id, node.selectors)
    await ctx.on_change()
    log.info("agent attested agent_id=%s type=%s", agent_id, attestation_type)
    add_audit_fields(agent_id=agent_id, attestation_type=attestation_type)
    return node, chain


def _already_attested(attestation_type: str, agent_id: object) -> AttestationFailed:
    # Someone else (another process on the node, a replayed document) attested this instance
    # first, or the agent lost its SVID: either deserves an operator's look.
    log.warning(
        "attestation refused: agent already attested agent_id=%s type=%s",
        agent_id,
        attestation_type,
    )
    return AttestationFailed(
        f"{attestation_type}: agent {agent_id} has already attested and its method does not "
        "allow re-attestation; evict the agent to attest it again"
    )
