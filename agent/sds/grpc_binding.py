"""``envoy.service.secret.v3.SecretDiscoveryService`` for grpclib, on xds-protos' messages.

xds-protos (generated from envoyproxy/data-plane-api) ships the messages and grpcio stubs only;
grpclib needs its own service base (``__mapping__``) and client stub. They are written here
against the message classes, and a unit test checks the paths and types against the service
descriptor xds-protos carries, so they cannot drift from the protos.
"""

from __future__ import annotations

import abc
from typing import Any

import grpclib.client
import grpclib.const
from envoy.service.discovery.v3 import discovery_pb2

SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
DELTA_SECRETS = f"/{SERVICE}/DeltaSecrets"
STREAM_SECRETS = f"/{SERVICE}/StreamSecrets"
FETCH_SECRETS = f"/{SERVICE}/FetchSecrets"


class SecretDiscoveryServiceBase(abc.ABC):
    """Implement the three methods; grpclib finds them through ``__mapping__``."""

    @abc.abstractmethod
    async def DeltaSecrets(self, stream: Any) -> None: ...

    @abc.abstractmethod
    async def StreamSecrets(self, stream: Any) -> None: ...

    @abc.abstractmethod
    async def FetchSecrets(self, stream: Any) -> None: ...

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream_stream = grpclib.const.Cardinality.STREAM_STREAM
        return {
            DELTA_SECRETS: grpclib.const.Handler(
                self.DeltaSecrets,
                stream_stream,
                discovery_pb2.DeltaDiscoveryRequest,
                discovery_pb2.DeltaDiscoveryResponse,
            ),
            STREAM_SECRETS: grpclib.const.Handler(
                self.StreamSecrets,
                stream_stream,
                discovery_pb2.DiscoveryRequest,
                discovery_pb2.DiscoveryResponse,
            ),
            FETCH_SECRETS: grpclib.const.Handler(
                self.FetchSecrets,
                grpclib.const.Cardinality.UNARY_UNARY,
                discovery_pb2.DiscoveryRequest,
                discovery_pb2.DiscoveryResponse,
            ),
        }


class SecretDiscoveryServiceStub:
    """A grpclib client: ``stub.StreamSecrets.open()``, ``await stub.FetchSecrets(request)``."""

    def __init__(self, channel: grpclib.client.Channel) -> None:
        self.DeltaSecrets = grpclib.client.StreamStreamMethod(
            channel,
            DELTA_SECRETS,
            discovery_pb2.DeltaDiscoveryRequest,
            discovery_pb2.DeltaDiscoveryResponse,
        )
        self.StreamSecrets = grpclib.client.StreamStreamMethod(
            channel,
            STREAM_SECRETS,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        )
        self.FetchSecrets = grpclib.client.UnaryUnaryMethod(
            channel,
            FETCH_SECRETS,
            discovery_pb2.DiscoveryRequest,
            discovery_pb2.DiscoveryResponse,
        )
