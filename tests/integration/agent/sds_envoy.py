"""An Envoy stand-in for SDS tests: xds-protos messages and its grpcio stubs over a Unix socket.

Uniquely named (imported by tests). grpcio, not grpclib, on purpose: Envoy's side of the wire is
another gRPC implementation than the agent's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_spiffe_validator_config_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from envoy.type.v3 import semantic_version_pb2
from google.rpc import status_pb2

from plastron.agent.sds.resources import SECRET_TYPE_URL, SPIFFE_VALIDATOR
from plastron.spiffe.x509svid import spiffe_id_from_certificate

WAIT = 20.0  # seconds a test waits for an expected message before failing


def node(
    node_id: str, *, disable_validator: object = None, envoy: tuple[int, int] | None = None
) -> Any:
    msg = base_pb2.Node(id=node_id, cluster="test")
    if disable_validator is not None:
        msg.metadata.update({"disable_spiffe_cert_validation": disable_validator})
    if envoy is not None:
        version = semantic_version_pb2.SemanticVersion(major_number=envoy[0], minor_number=envoy[1])
        msg.user_agent_build_version.version.CopyFrom(version)
    return msg


def request(
    names: list[str],
    *,
    node_msg: Any = None,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
) -> Any:
    msg = discovery_pb2.DiscoveryRequest(
        resource_names=names, type_url=SECRET_TYPE_URL, response_nonce=nonce, version_info=version
    )
    if node_msg is not None:
        msg.node.CopyFrom(node_msg)
    if error is not None:
        msg.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return msg


def secrets(response: Any) -> dict[str, Any]:
    """The response's Secrets by name (each resource must be a Secret)."""
    out: dict[str, Any] = {}
    for resource in response.resources:
        assert resource.type_url == SECRET_TYPE_URL, resource.type_url
        secret = secret_pb2.Secret()
        assert resource.Unpack(secret)
        out[secret.name] = secret
    return out


@dataclass
class TlsCertificate:
    chain: list[x509.Certificate]
    key: Any

    @property
    def spiffe_id(self) -> str:
        return str(spiffe_id_from_certificate(self.chain[0]))


def tls_certificate(secret: Any) -> TlsCertificate:
    assert secret.WhichOneof("type") == "tls_certificate", secret
    tls = secret.tls_certificate
    chain = x509.load_pem_x509_certificates(tls.certificate_chain.inline_bytes)
    key = serialization.load_pem_private_key(tls.private_key.inline_bytes, password=None)
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(*public) == chain[0].public_key().public_bytes(*public)
    return TlsCertificate(chain, key)


def spiffe_validator(secret: Any) -> dict[str, bytes]:
    """The trust domains (name → PEM bundle), in order, of a SPIFFE-validator context."""
    assert secret.WhichOneof("type") == "validation_context", secret
    custom = secret.validation_context.custom_validator_config
    assert custom.name == SPIFFE_VALIDATOR
    config = tls_spiffe_validator_config_pb2.SPIFFECertValidatorConfig()
    assert custom.typed_config.Unpack(config)
    return {td.name: td.trust_bundle.inline_bytes for td in config.trust_domains}


def trusted_ca(secret: Any) -> bytes:
    """The PEM bundle of a plain (no SPIFFE validator) validation context."""
    context = secret.validation_context
    assert not context.HasField("custom_validator_config"), secret
    data: bytes = context.trusted_ca.inline_bytes
    return data


class SdsStream:
    """One StreamSecrets call: send requests, read responses (each read has a deadline)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets()

    async def send(self, msg: Any) -> None:
        await self.call.write(msg)

    async def recv(self) -> Any:
        msg = await asyncio.wait_for(self.call.read(), WAIT)
        assert msg is not grpc.aio.EOF, "stream ended"
        return msg

    async def error(self) -> grpc.aio.AioRpcError:
        """The status the stream ends with (it must end with an error)."""
        try:
            msg = await asyncio.wait_for(self.call.read(), WAIT)
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError(f"expected the stream to end with an error, got {msg}")

    async def ack(self, response: Any, names: list[str]) -> None:
        await self.send(request(names, nonce=response.nonce, version=response.version_info))

    def cancel(self) -> None:
        self.call.cancel()


def channel(socket_path: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"unix:{socket_path}")


async def fetch(socket_path: str, msg: Any) -> Any:
    async with channel(socket_path) as chan:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(chan)
        return await stub.FetchSecrets(msg, timeout=WAIT)
