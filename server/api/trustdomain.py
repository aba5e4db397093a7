"""spire.api.server.trustdomain.v1.TrustDomain: federation relationships and RefreshBundle.

Relationships created here live in the datastore; the federation manager picks a change up
within its reload period (or at once through RefreshBundle). A relationship may carry the
foreign domain's bundle (``trust_domain_bundle``): it is stored as that domain's federated
bundle, the trust anchor an https_spiffe endpoint is authenticated with.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from grpclib.server import Stream

from plastron.errors import InvalidArgument, NotFound, PlastronError
from plastron.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2
from plastron.proto.spire.api.types import federationrelationship_pb2 as fr_pb2
from plastron.records import FederationRelationship
from plastron.server.api.context import ApiContext
from plastron.server.api.status import status_proto
from plastron.server.bundles import fetch_bundle
from plastron.server.federation.config import HTTPS_SPIFFE, HTTPS_WEB, check_relationship
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.wire.bundles import bundle_from_proto, bundle_to_proto
from plastron.wire.ids import trust_domain_from_text
from plastron.wire.limits import MAX_BATCH, check_page_size

_ALL = fr_pb2.FederationRelationshipMask(
    bundle_endpoint_url=True, bundle_endpoint_profile=True, trust_domain_bundle=True
)
_PB = trustdomain_pb2


def relationship_from_proto(
    msg: fr_pb2.FederationRelationship, field: str
) -> FederationRelationship:
    td = trust_domain_from_text(msg.trust_domain, f"{field}.trust_domain")
    profile = msg.WhichOneof("bundle_endpoint_profile")
    if profile is None:
        raise InvalidArgument(
            f"{field}: bundle endpoint profile is required (https_web or https_spiffe)"
        )
    endpoint_id = None
    if profile == HTTPS_SPIFFE:
        text = msg.https_spiffe.endpoint_spiffe_id
        try:
            endpoint_id = SpiffeId.parse(text)
        except InvalidArgument as exc:
            where = f"{field}.https_spiffe.endpoint_spiffe_id"
            raise InvalidArgument(f"{where}: {text[:256]!r} is not a SPIFFE ID: {exc}") from None
    rel = FederationRelationship(td, msg.bundle_endpoint_url, profile, endpoint_id)
    try:
        check_relationship(rel)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc}") from None
    return rel


def relationship_to_proto(
    rel: FederationRelationship,
    bundle: Bundle | None,
    mask: fr_pb2.FederationRelationshipMask | None,
) -> fr_pb2.FederationRelationship:
    mask = mask or _ALL
    msg = fr_pb2.FederationRelationship(trust_domain=rel.trust_domain.name)
    if mask.bundle_endpoint_url:
        msg.bundle_endpoint_url = rel.bundle_endpoint_url
    if mask.bundle_endpoint_profile:
        if rel.profile == HTTPS_WEB:
            msg.https_web.SetInParent()
        else:
            msg.https_spiffe.endpoint_spiffe_id = str(rel.endpoint_spiffe_id)
    if mask.trust_domain_bundle and bundle is not None:
        msg.trust_domain_bundle.CopyFrom(bundle_to_proto(bundle))
    return msg


def _mask(req: Any, name: str = "output_mask") -> fr_pb2.FederationRelationshipMask | None:
    return getattr(req, name) if req.HasField(name) else None


class TrustDomainService(trustdomain_grpc.TrustDomainBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def _to_proto(
        self, rel: FederationRelationship, mask: fr_pb2.FederationRelationshipMask | None
    ) -> fr_pb2.FederationRelationship:
        bundle = None
        if mask is None or mask.trust_domain_bundle:
            bundle = await fetch_bundle(self.ctx.datastore, rel.trust_domain)
        return relationship_to_proto(rel, bundle, mask)

    def _foreign(self, text: str, field: str) -> TrustDomain:
        td = trust_domain_from_text(text, field)
        if td == self.ctx.trust_domain:
            raise InvalidArgument(
                f"{field}: {td.name!r} is the server's own trust domain; a federation "
                "relationship is with another one"
            )
        return td

    def _bundle_of(self, msg: fr_pb2.FederationRelationship, field: str) -> Bundle | None:
        if not msg.HasField("trust_domain_bundle"):
            return None
        bundle = bundle_from_proto(msg.trust_domain_bundle, f"{field}.trust_domain_bundle")
        if bundle.trust_domain.name != msg.trust_domain:
            raise InvalidArgument(
                f"{field}.trust_domain_bundle: bundle of {bundle.trust_domain.name!r} given for "
                f"{msg.trust_domain!r}"
            )
        if not bundle.x509_authorities:
            raise InvalidArgument(f"{field}.trust_domain_bundle: has no X.509 authority")
        return bundle

    async def ListFederationRelationships(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        check_page_size(req.page_size)
        rels, token = await self.ctx.datastore.list_federation_relationships(
            req.page_size, req.page_token
        )
        out = [await self._to_proto(rel, _mask(req)) for rel in rels]
        await stream.send_message(
            _PB.ListFederationRelationshipsResponse(
                federation_relationships=out, next_page_token=token
            )
        )

    async def GetFederationRelationship(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        td = trust_domain_from_text(req.trust_domain, "trust_domain")
        rel = await self.ctx.datastore.fetch_federation_relationship(td)
        if rel is None:
            raise NotFound(f"federation relationship with {td.name!r} does not exist")
        await stream.send_message(await self._to_proto(rel, _mask(req)))

    async def BatchCreateFederationRelationship(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.federation_relationships))
        results = []
        for i, msg in enumerate(req.federation_relationships):
            field = f"federation_relationships[{i}]"
            try:
                self._foreign(msg.trust_domain, f"{field}.trust_domain")
                rel = relationship_from_proto(msg, field)
                bundle = self._bundle_of(msg, field)
                await self.ctx.datastore.create_federation_relationship(rel)
                if bundle is not None:
                    await self.ctx.datastore.set_bundle(rel.trust_domain, bundle.to_json())
                out = await self._to_proto(rel, _mask(req))
                results.append(
                    _PB.BatchCreateFederationRelationshipResponse.Result(
                        status=status_proto(None), federation_relationship=out
                    )
                )
            except PlastronError as exc:
                results.append(
                    _PB.BatchCreateFederationRelationshipResponse.Result(status=status_proto(exc))
                )
        await stream.send_message(_PB.BatchCreateFederationRelationshipResponse(results=results))

    async def _update_one(
        self,
        msg: fr_pb2.FederationRelationship,
        mask: fr_pb2.FederationRelationshipMask,
        field: str,
    ) -> FederationRelationship:
        td = self._foreign(msg.trust_domain, f"{field}.trust_domain")
        current = await self.ctx.datastore.fetch_federation_relationship(td)
        if current is None:
            raise NotFound(f"federation relationship with {td.name!r} does not exist")
        url, profile, endpoint_id = (
            current.bundle_endpoint_url,
            current.profile,
            current.endpoint_spiffe_id,
        )
        if mask.bundle_endpoint_url:
            url = msg.bundle_endpoint_url
        if mask.bundle_endpoint_profile:
            probe = fr_pb2.FederationRelationship()
            probe.CopyFrom(msg)
            probe.bundle_endpoint_url = url
            given = relationship_from_proto(probe, field)
            profile, endpoint_id = given.profile, given.endpoint_spiffe_id
        rel = FederationRelationship(td, url, profile, endpoint_id)
        try:
            check_relationship(rel)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{field}: {exc}") from None
        bundle = self._bundle_of(msg, field) if mask.trust_domain_bundle else None
        await self.ctx.datastore.update_federation_relationship(rel)
        if bundle is not None:
            await self.ctx.datastore.set_bundle(td, bundle.to_json())
        return rel

    async def BatchUpdateFederationRelationship(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.federation_relationships))
        input_mask = _mask(req, "input_mask") or _ALL
        results = []
        for i, msg in enumerate(req.federation_relationships):
            field = f"federation_relationships[{i}]"
            try:
                rel = await self._update_one(msg, input_mask, field)
                out = await self._to_proto(rel, _mask(req))
                results.append(
                    _PB.BatchUpdateFederationRelationshipResponse.Result(
                        status=status_proto(None), federation_relationship=out
                    )
                )
            except PlastronError as exc:
                results.append(
                    _PB.BatchUpdateFederationRelationshipResponse.Result(status=status_proto(exc))
                )
        await stream.send_message(_PB.BatchUpdateFederationRelationshipResponse(results=results))

    async def BatchDeleteFederationRelationship(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.trust_domains))
        results = []
        for i, text in enumerate(req.trust_domains):
            result = _PB.BatchDeleteFederationRelationshipResponse.Result
            try:
                td = trust_domain_from_text(text, f"trust_domains[{i}]")
                await self.ctx.datastore.delete_federation_relationship(td)
                results.append(result(status=status_proto(None), trust_domain=td.name))
            except PlastronError as exc:
                results.append(result(status=status_proto(exc), trust_domain=text))
        await stream.send_message(_PB.BatchDeleteFederationRelationshipResponse(results=results))

    async def RefreshBundle(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        td = trust_domain_from_text(req.trust_domain, "trust_domain")
        manager = self.ctx.federation
        if manager is None or not await manager.refresh_now(td):
            raise NotFound(f"no federation relationship with {td.name!r}")
        await stream.send_message(empty_pb2.Empty())


def _check_batch(size: int) -> None:
    if size > MAX_BATCH:
        raise InvalidArgument(f"batch of {size} exceeds {MAX_BATCH}")
