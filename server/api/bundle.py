"""spire.api.server.bundle.v1.Bundle."""

from __future__ import annotations

from typing import Any

from grpclib.server import Stream

from plastron.errors import InvalidArgument, NotFound, PlastronError
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.records import DeleteMode
from plastron.server import bundles
from plastron.server.api.context import ApiContext
from plastron.server.api.status import status_proto, unimplemented
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.wire.bundles import (
    bundle_from_proto,
    bundle_to_proto,
    jwt_authorities_from_proto,
    x509_authorities_from_proto,
)
from plastron.wire.ids import trust_domain_from_text
from plastron.wire.limits import MAX_BATCH, check_page_size

_DELETE_MODES: dict[int, DeleteMode] = {
    bundle_pb2.BatchDeleteFederatedBundleRequest.RESTRICT: "restrict",
    bundle_pb2.BatchDeleteFederatedBundleRequest.DELETE: "delete",
    bundle_pb2.BatchDeleteFederatedBundleRequest.DISSOCIATE: "dissociate",
}


def _mask(req: Any) -> Any:
    return req.output_mask if req.HasField("output_mask") else None


class BundleService(bundle_grpc.BundleBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    @property
    def _td(self) -> TrustDomain:
        return self.ctx.trust_domain

    def _federated_td(self, text: str, field: str) -> TrustDomain:
        td = trust_domain_from_text(text, field)
        if td == self._td:
            raise InvalidArgument(
                f"{field}: {td.name!r} is the server's own trust domain, not a federated one"
            )
        return td

    async def GetBundle(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        bundle = await bundles.load_bundle(self.ctx.datastore, self._td)
        await stream.send_message(bundle_to_proto(bundle, _mask(req)))

    async def AppendBundle(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        x509s = x509_authorities_from_proto(req.x509_authorities, "x509_authorities")
        jwts = jwt_authorities_from_proto(req.jwt_authorities, "jwt_authorities")
        bundle = await bundles.append_authorities(self.ctx.datastore, self._td, x509s, jwts)
        await stream.send_message(bundle_to_proto(bundle, _mask(req)))

    async def PublishJWTAuthority(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if not req.HasField("jwt_authority"):
            raise InvalidArgument("jwt_authority: missing")
        jwts = jwt_authorities_from_proto([req.jwt_authority], "jwt_authority")
        bundle = await bundles.append_authorities(self.ctx.datastore, self._td, (), jwts)
        msg = bundle_to_proto(bundle)
        await stream.send_message(
            bundle_pb2.PublishJWTAuthorityResponse(jwt_authorities=msg.jwt_authorities)
        )

    async def PublishWITAuthority(self, stream: Stream[Any, Any]) -> None:
        await unimplemented(stream, "PublishWITAuthority")

    async def CountBundles(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        count = await self.ctx.datastore.count_bundles()
        await stream.send_message(bundle_pb2.CountBundlesResponse(count=count))

    async def ListFederatedBundles(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        check_page_size(req.page_size)
        rows, token = await self.ctx.datastore.list_bundles(req.page_size, req.page_token)
        mask = _mask(req)
        out = [bundle_to_proto(Bundle.from_json(data), mask) for td, data in rows if td != self._td]
        await stream.send_message(
            bundle_pb2.ListFederatedBundlesResponse(bundles=out, next_page_token=token)
        )

    async def GetFederatedBundle(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        td = self._federated_td(req.trust_domain, "trust_domain")
        bundle = await bundles.load_bundle(self.ctx.datastore, td)
        await stream.send_message(bundle_to_proto(bundle, _mask(req)))

    async def BatchCreateFederatedBundle(self, stream: Stream[Any, Any]) -> None:
        await self._batch_write(stream, "create")

    async def BatchUpdateFederatedBundle(self, stream: Stream[Any, Any]) -> None:
        await self._batch_write(stream, "update")

    async def BatchSetFederatedBundle(self, stream: Stream[Any, Any]) -> None:
        await self._batch_write(stream, "set")

    async def _batch_write(self, stream: Stream[Any, Any], op: str) -> None:
        req = await stream.recv_message()
        assert req is not None
        if len(req.bundle) > MAX_BATCH:
            raise InvalidArgument(f"bundle: batch of {len(req.bundle)} exceeds {MAX_BATCH}")
        mask = _mask(req)
        results = []
        response_type: Any = {
            "create": bundle_pb2.BatchCreateFederatedBundleResponse,
            "update": bundle_pb2.BatchUpdateFederatedBundleResponse,
            "set": bundle_pb2.BatchSetFederatedBundleResponse,
        }[op]
        for i, msg in enumerate(req.bundle):
            try:
                bundle = bundle_from_proto(msg, f"bundle[{i}]")
                self._federated_td(msg.trust_domain, f"bundle[{i}].trust_domain")
                if not bundle.x509_authorities and not bundle.jwt_authorities:
                    raise InvalidArgument(f"bundle[{i}]: a bundle needs at least one authority")
                await self._write(op, bundle)
                results.append(
                    response_type.Result(
                        status=status_proto(None), bundle=bundle_to_proto(bundle, mask)
                    )
                )
            except PlastronError as exc:
                results.append(response_type.Result(status=status_proto(exc)))
        await self.ctx.on_change()
        await stream.send_message(response_type(results=results))

    async def _write(self, op: str, bundle: Bundle) -> None:
        ds = self.ctx.datastore
        if op == "create":
            await ds.create_bundle(bundle.trust_domain, bundle.to_json())
        elif op == "set":
            await ds.set_bundle(bundle.trust_domain, bundle.to_json())
        else:
            if await ds.fetch_bundle(bundle.trust_domain) is None:
                raise NotFound(f"no bundle for trust domain {bundle.trust_domain.name!r}")
            await ds.set_bundle(bundle.trust_domain, bundle.to_json())

    async def BatchDeleteFederatedBundle(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if len(req.trust_domains) > MAX_BATCH:
            raise InvalidArgument(f"trust_domains: batch exceeds {MAX_BATCH}")
        mode = _DELETE_MODES.get(req.mode)
        if mode is None:
            raise InvalidArgument(f"mode: unknown delete mode {req.mode}")
        results = []
        for i, text in enumerate(req.trust_domains):
            try:
                td = self._federated_td(text, f"trust_domains[{i}]")
                await self.ctx.datastore.delete_bundle(td, mode)
                results.append(
                    bundle_pb2.BatchDeleteFederatedBundleResponse.Result(
                        status=status_proto(None), trust_domain=td.name
                    )
                )
            except PlastronError as exc:
                results.append(
                    bundle_pb2.BatchDeleteFederatedBundleResponse.Result(
                        status=status_proto(exc), trust_domain=text
                    )
                )
        await self.ctx.on_change()
        await stream.send_message(bundle_pb2.BatchDeleteFederatedBundleResponse(results=results))
