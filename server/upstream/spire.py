"""The ``spire`` UpstreamAuthority: a nested (downstream) server gets its CA from an upstream
server of the same trust domain.

Config (SPIRE's keys): ``server_address`` and ``server_port`` of the upstream server, and
``workload_api_socket``, the Workload API socket of the agent that attests this server on the
upstream side (an entry with ``downstream = true`` for this server's selectors).

On every call the plugin fetches this server's X509-SVID and the trust bundle from that socket
(so a rotated SVID is picked up without a restart), then, over mTLS with that SVID, checking
that the peer is ``spiffe://<td>/spire/server``:

- ``mint_x509_ca``: SVID API ``NewDownstreamX509CA`` with the CSR and the CA TTL as the
  preferred TTL; the upstream returns the intermediate chain and its X.509 roots;
- ``publish_jwt_key``: Bundle API ``PublishJWTAuthority``; the upstream returns every JWT key
  of its bundle, which this server adds to its own;
- ``fetch_bundle``: Bundle API ``GetBundle``, which this server polls to follow the upstream's
  bundle (new roots, other downstreams' JWT keys, taints and revocations).

Security considerations: whoever holds an SVID whose entry is ``downstream`` can mint CAs for
the whole trust domain; the agent's socket is as sensitive as a CA key.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, FailedPrecondition, PlastronError, Unavailable
from plastron.plugins import PluginContext, Registries
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.proto.spire.api.server.bundle.v1.bundle_grpc import BundleStub
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.server.svid.v1.svid_grpc import SVIDStub
from plastron.proto.spire.api.types import bundle_pb2 as types_pb2
from plastron.spiffe.bundle import Bundle, JwtAuthority
from plastron.spiffe.ids import TrustDomain, server_id
from plastron.spiffe.x509svid import X509Svid, parse_der_chain
from plastron.transport.client import SpiffeChannel
from plastron.transport.tls import client_ssl_context
from plastron.upstream import UpstreamAuthority
from plastron.wire.bundles import bundle_from_proto, jwt_authorities_from_proto
from plastron.wire.keys import spki_der
from plastron.workloadapi_client import WorkloadClient

CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class SpireUpstreamConfig:
    server_address: str
    server_port: int
    workload_api_socket: Path


class SpireUpstreamAuthority:
    """Asks an upstream server for this server's CA (see module docstring)."""

    def __init__(self, config: SpireUpstreamConfig, *, trust_domain: TrustDomain) -> None:
        self._config = config
        self._td = trust_domain

    @property
    def _where(self) -> str:
        return f"{self._config.server_address}:{self._config.server_port}"

    async def _identity(self) -> tuple[X509Svid, list[x509.Certificate]]:
        """This server's X509-SVID (the first the agent offers, as SPIRE) and its bundle."""
        socket = str(self._config.workload_api_socket)
        try:
            async with WorkloadClient(socket, timeout=CALL_TIMEOUT) as client:
                response = await client.fetch_x509()
        except (OSError, GRPCError, StreamTerminatedError, ConnectionError) as exc:
            raise Unavailable(
                f"spire upstream: no X509-SVID from the Workload API at {socket!r}: "
                f"{_describe(exc)}"
            ) from exc
        if not response.svids:
            raise FailedPrecondition(
                f"spire upstream: the Workload API at {socket!r} has no SVID for this server"
            )
        first = response.svids[0]
        try:
            svid = X509Svid.from_der(first.x509_svid, first.x509_svid_key)
            bundle = parse_der_chain(first.bundle)
        except PlastronError as exc:
            raise FailedPrecondition(f"spire upstream: SVID from {socket!r}: {exc}") from exc
        return svid, bundle

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[Channel]:
        svid, bundle = await self._identity()
        ctx: ssl.SSLContext = client_ssl_context(
            trust_bundle=bundle, client_chain=list(svid.chain), client_key=svid.private_key
        )
        channel = SpiffeChannel(
            self._config.server_address,
            self._config.server_port,
            ssl=ctx,
            expected_server_id=server_id(self._td),
        )
        try:
            yield channel
        except (OSError, StreamTerminatedError, ConnectionError) as exc:
            raise Unavailable(
                f"spire upstream: server {self._where} unreachable: {_describe(exc)}"
            ) from exc
        except GRPCError as exc:
            raise FailedPrecondition(
                f"spire upstream: server {self._where} refused: {exc.status.name} {exc.message}"
            ) from exc
        finally:
            channel.close()

    async def mint_x509_ca(
        self, csr: x509.CertificateSigningRequest, ttl: dt.timedelta
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        request = svid_pb2.NewDownstreamX509CARequest(
            csr=csr.public_bytes(serialization.Encoding.DER),
            preferred_ttl=min(int(ttl.total_seconds()), 2**31 - 1),
        )
        async with self._channel() as channel:
            response = await SVIDStub(channel).NewDownstreamX509CA(request, timeout=CALL_TIMEOUT)
        try:
            chain = [c for der in response.ca_cert_chain for c in parse_der_chain(der)]
            roots = [c for der in response.x509_authorities for c in parse_der_chain(der)]
        except PlastronError as exc:
            raise FailedPrecondition(
                f"spire upstream: server {self._where} sent an unreadable CA: {exc}"
            ) from exc
        return chain, roots

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        expires = int(key.expires_at.timestamp()) if key.expires_at else 0
        request = bundle_pb2.PublishJWTAuthorityRequest(
            jwt_authority=types_pb2.JWTKey(
                public_key=spki_der(key.public_key), key_id=key.key_id, expires_at=expires
            )
        )
        async with self._channel() as channel:
            response = await BundleStub(channel).PublishJWTAuthority(request, timeout=CALL_TIMEOUT)
        try:
            return list(jwt_authorities_from_proto(response.jwt_authorities, "jwt_authorities"))
        except PlastronError as exc:
            raise FailedPrecondition(
                f"spire upstream: server {self._where} sent unreadable JWT keys: {exc}"
            ) from exc

    async def fetch_bundle(self) -> Bundle:
        """The upstream's current trust bundle (its roots and every JWT key it vouches for)."""
        async with self._channel() as channel:
            response = await BundleStub(channel).GetBundle(
                bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT
            )
        try:
            bundle = bundle_from_proto(response)
        except PlastronError as exc:
            raise FailedPrecondition(
                f"spire upstream: server {self._where} sent an unreadable bundle: {exc}"
            ) from exc
        if bundle.trust_domain != self._td:
            raise FailedPrecondition(
                f"spire upstream: server {self._where} sent the bundle of "
                f"{bundle.trust_domain.name!r}, not {self._td.name!r}"
            )
        return bundle


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return f"{exc.status.name} {exc.message}"
    return str(exc) or type(exc).__name__


def _port(plugin: PluginConfig, raw: object) -> int:
    """SPIRE writes the port as a string ("8081"); a number is accepted too."""
    text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{plugin.path}.server_port must be a port 1-65535, got {raw!r}")
    return int(text)


def _spire_upstream_config(plugin: PluginConfig, context: PluginContext) -> SpireUpstreamConfig:
    settings = plugin.settings()
    address = settings.string("server_address")
    port = settings.raw("server_port")
    socket = settings.string("workload_api_socket")
    settings.finish()
    for name, value in (("server_address", address), ("workload_api_socket", socket)):
        if not value:
            raise ConfigError(f"{settings.where(name)} must be a non-empty string")
    if port is None:
        raise ConfigError(f"{settings.where('server_port')} is required")
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the spire UpstreamAuthority needs the trust domain")
    return SpireUpstreamConfig(address, _port(plugin, port), context.resolve(socket))


def _check_spire_upstream(plugin: PluginConfig, context: PluginContext) -> None:
    _spire_upstream_config(plugin, context)


def _spire_upstream(plugin: PluginConfig, context: PluginContext) -> UpstreamAuthority:
    config = _spire_upstream_config(plugin, context)
    assert context.trust_domain is not None  # checked with the settings
    return SpireUpstreamAuthority(config, trust_domain=context.trust_domain)


def register(registries: Registries) -> None:
    registries.upstream_authorities.register("spire", _spire_upstream, check=_check_spire_upstream)
