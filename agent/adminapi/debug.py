"""spire.agent.debug.v1.Debug and spire.api.agent.logger.v1.Logger on the agent's admin socket."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from grpclib.server import Stream

from plastron.agent.cache import WorkloadCache
from plastron.agent.workloadapi.status import mapped_errors
from plastron.errors import InvalidSvid
from plastron.log_levels import LoggerMethods
from plastron.proto.spire.api.agent.debug.v1 import debug_grpc, debug_pb2
from plastron.proto.spire.api.agent.logger.v1 import logger_grpc
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.x509svid import spiffe_id_from_certificate
from plastron.wire.ids import spiffe_id_to_proto


def chain_to_root(
    chain: Sequence[x509.Certificate], bundle: Bundle | None
) -> list[x509.Certificate]:
    """The agent's SVID chain and the bundle authority that signed its last certificate (as
    SPIRE shows the verified chain, leaf to root)."""
    out = list(chain)
    if not out or bundle is None:
        return out
    last = out[-1]
    for root in bundle.x509_certificates():
        if root.subject != last.issuer or root == last:
            continue
        try:
            last.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        out.append(root)
        break
    return out


def _cert_message(cert: x509.Certificate) -> debug_pb2.GetInfoResponse.Cert:
    msg = debug_pb2.GetInfoResponse.Cert(
        expires_at=int(cert.not_valid_after_utc.timestamp()),
        subject=cert.subject.rfc4514_string(),
    )
    try:
        msg.id.CopyFrom(spiffe_id_to_proto(spiffe_id_from_certificate(cert)))
    except InvalidSvid:  # a CA certificate without a SPIFFE ID: unset, as in SPIRE
        msg.ClearField("id")
    return msg


class AgentDebugService(debug_grpc.DebugBase):
    def __init__(
        self,
        cache: WorkloadCache,
        agent_chain: Callable[[], Sequence[x509.Certificate]],
        last_sync_success: Callable[[], float | None],
    ) -> None:
        self._cache = cache
        self._agent_chain = agent_chain
        self._last_sync_success = last_sync_success
        self._started = time.monotonic()

    async def GetInfo(self, stream: Stream[Any, Any]) -> None:
        async with mapped_errors("Debug.GetInfo", "admin API"):
            await stream.recv_message()
        chain = chain_to_root(self._agent_chain(), self._cache.bundle)
        cached_x509 = self._cache.x509_svid_count
        await stream.send_message(
            debug_pb2.GetInfoResponse(
                svid_chain=[_cert_message(cert) for cert in chain],
                uptime=int(time.monotonic() - self._started),
                svids_count=cached_x509,
                last_sync_success=int(self._last_sync_success() or 0),
                cached_x509_svids_count=cached_x509,
                cached_jwt_svids_count=self._cache.jwt_svid_count,
            )
        )


class AgentLoggerService(LoggerMethods, logger_grpc.LoggerBase):
    pass
