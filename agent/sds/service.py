"""Envoy SDS v3 (``envoy.service.secret.v3.SecretDiscoveryService``) on the agent's socket.

Served next to the Workload API, as SPIRE's agent serves it, to Envoy processes attested like
any workload (``workloadapi.callers``: the connecting process, its selectors, and a check that
it is still the process that connected); SDS asks no ``workload.spiffe.io`` header, since Envoy
sends none (SPIRE asks it on Workload API methods only). A caller matching no entry gets
PermissionDenied. Resource names are in ``resources``, the stream protocol in ``stream``.
"""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.cache import WorkloadCache
from plastron.agent.config import SdsConfig
from plastron.agent.sds.grpc_binding import SecretDiscoveryServiceBase
from plastron.agent.sds.resources import (
    SECRET_TYPE_URL,
    SecretResolver,
    check_type_url,
    packed,
    quoted_names,
)
from plastron.agent.sds.stream import SecretStream, not_authorized_message
from plastron.agent.workloadapi.callers import CallerAttestation, entitled_entries
from plastron.agent.workloadapi.status import mapped_errors
from plastron.errors import InvalidArgument, Unavailable

API = "Envoy SDS"


class SecretDiscoveryService(SecretDiscoveryServiceBase):
    def __init__(
        self, cache: WorkloadCache, attestation: CallerAttestation, config: SdsConfig
    ) -> None:
        self._cache = cache
        self._attestation = attestation
        self._config = config

    async def StreamSecrets(self, stream: Any) -> None:
        async with mapped_errors("StreamSecrets", API):
            caller, selectors = await self._attestation.attest(stream)
            entitled_entries(self._cache, selectors)
            await SecretStream(stream, caller, selectors, self._cache, self._config).run()

    async def FetchSecrets(self, stream: Any) -> None:
        """One response, unversioned and without a nonce (as SPIRE); a name whose SVID is not
        minted yet is UNAVAILABLE (retry) rather than waited for."""
        async with mapped_errors("FetchSecrets", API):
            caller, selectors = await self._attestation.attest(stream)
            request = await stream.recv_message()
            check_type_url(request.type_url)
            entries = entitled_entries(self._cache, selectors)
            update = self._cache.update_for(selectors)
            node = request.node if request.HasField("node") else None
            resolution = SecretResolver(self._config, node, entries, update).resolve(
                request.resource_names
            )
            if resolution.unknown:
                raise InvalidArgument(not_authorized_message(resolution.unknown))
            if resolution.pending:
                raise Unavailable(
                    f"not in the agent's cache yet: {quoted_names(resolution.pending)}; retry"
                )
            caller.check()
            await stream.send_message(
                discovery_pb2.DiscoveryResponse(
                    resources=packed(resolution.secrets), type_url=SECRET_TYPE_URL
                )
            )

    async def DeltaSecrets(self, stream: Any) -> None:
        # SPIRE's agent does not implement incremental SDS either; Envoy uses StreamSecrets
        # unless its config_source asks for DELTA_GRPC.
        raise GRPCError(
            Status.UNIMPLEMENTED,
            "DeltaSecrets (incremental xDS) is not implemented; use StreamSecrets"
            " (api_type GRPC, not DELTA_GRPC)",
        )
