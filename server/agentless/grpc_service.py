"""``plastron.agentless.v1.TokenExchange/Exchange``: the token exchange over the server's gRPC
listener (TLS; no client certificate needed: the credential is the proof). Refusals become
gRPC statuses with the same precise message as the HTTP error_description."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.proto.agentless.v1 import agentless_pb2
from plastron.proto.agentless.v1.agentless_grpc import TokenExchangeBase
from plastron.server.agentless.exchange import ExchangeRefused, ExchangeRequest, TokenExchange
from plastron.transport.peer import peer_info

_DER = Encoding.DER
# RFC 6749 error -> gRPC status
STATUS_OF_ERROR = {
    "invalid_request": Status.INVALID_ARGUMENT,
    "invalid_client": Status.UNAUTHENTICATED,
    "invalid_grant": Status.PERMISSION_DENIED,
    "invalid_target": Status.PERMISSION_DENIED,
    "slow_down": Status.RESOURCE_EXHAUSTED,
    "temporarily_unavailable": Status.UNAVAILABLE,
}


class TokenExchangeService(TokenExchangeBase):
    def __init__(self, exchange: TokenExchange) -> None:
        self._exchange = exchange

    async def Exchange(self, stream: Any) -> None:
        msg: agentless_pb2.ExchangeRequest = await stream.recv_message()
        peer = peer_info(stream)
        source = peer.address[0] if peer.address else "local"
        request = ExchangeRequest(
            credential=msg.credential,
            source=source,
            audience=tuple(msg.audience),
            spiffe_id=msg.spiffe_id,
            csr=base64.b64encode(msg.csr).decode("ascii") if msg.csr else "",
            cluster=msg.cluster,
        )
        try:
            result = await self._exchange.exchange(request)
        except ExchangeRefused as exc:
            status = STATUS_OF_ERROR.get(exc.error, Status.INVALID_ARGUMENT)
            raise GRPCError(status, f"{exc.error}: {exc.description}") from None
        der = [c.public_bytes(_DER) for c in result.x509_svid]
        await stream.send_message(
            agentless_pb2.ExchangeResponse(
                spiffe_id=str(result.spiffe_id),
                token=result.token,
                expires_at=result.expires_at,
                x509_svid=der,
                bundle=[c.public_bytes(_DER) for c in result.bundle],
            )
        )
