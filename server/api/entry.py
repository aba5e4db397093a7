"""spire.api.server.entry.v1.Entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpclib.server import Stream

from plastron.errors import InvalidArgument, NotFound, PlastronError
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.proto.spire.api.types import federateswith_pb2, selector_pb2
from plastron.records import RegistrationEntry
from plastron.server.api import authorized_wire as wire
from plastron.server.api.authz import current_caller
from plastron.server.api.context import ApiContext
from plastron.server.api.status import status_proto
from plastron.spiffe.ids import TrustDomain
from plastron.transport.codec import Encoded
from plastron.wire.entries import (
    ENTRY_MASK_FIELDS,
    entry_from_proto,
    entry_to_proto,
    mask_fields,
    member_id_from_proto,
    workload_id_from_proto,
)
from plastron.wire.ids import trust_domain_from_text
from plastron.wire.limits import MAX_BATCH, check_page_size
from plastron.wire.selectors import selectors_from_proto

SYNC_PAGE_SIZE = 500
_MATCH = {
    selector_pb2.SelectorMatch.MATCH_EXACT: "exact",
    selector_pb2.SelectorMatch.MATCH_SUBSET: "subset",
    selector_pb2.SelectorMatch.MATCH_SUPERSET: "superset",
    selector_pb2.SelectorMatch.MATCH_ANY: "any",
}
_FED_MATCH = {
    federateswith_pb2.FederatesWithMatch.MATCH_EXACT: "exact",
    federateswith_pb2.FederatesWithMatch.MATCH_SUBSET: "subset",
    federateswith_pb2.FederatesWithMatch.MATCH_SUPERSET: "superset",
    federateswith_pb2.FederatesWithMatch.MATCH_ANY: "any",
}


def entry_filters(flt: Any, td: TrustDomain) -> dict[str, Any]:
    """Datastore filter kwargs from a Count/ListEntriesRequest.Filter. As SPIRE, an ID filter
    no entry could match (another trust domain, no path, a reserved SPIFFE ID) is refused."""
    out: dict[str, Any] = {}
    if flt.HasField("by_spiffe_id"):
        out["by_spiffe_id"] = workload_id_from_proto(flt.by_spiffe_id, td, "filter.by_spiffe_id")
    if flt.HasField("by_parent_id"):
        out["by_parent_id"] = member_id_from_proto(flt.by_parent_id, td, "filter.by_parent_id")
    if flt.HasField("by_selectors"):
        sels = selectors_from_proto(flt.by_selectors.selectors, "filter.by_selectors")
        if not sels:
            raise InvalidArgument("filter.by_selectors: at least one selector is required")
        out["by_selectors"] = (sels, _MATCH[flt.by_selectors.match])
    if flt.HasField("by_federates_with"):
        tds = tuple(
            trust_domain_from_text(t, "filter.by_federates_with")
            for t in flt.by_federates_with.trust_domains
        )
        if not tds:
            raise InvalidArgument("filter.by_federates_with: at least one trust domain is required")
        out["by_federates_with"] = (tds, _FED_MATCH[flt.by_federates_with.match])
    if flt.HasField("by_hint"):
        out["by_hint"] = flt.by_hint.value
    if flt.HasField("by_downstream"):
        out["by_downstream"] = flt.by_downstream.value
    return out


def _mask(req: Any, name: str = "output_mask") -> Any:
    return getattr(req, name) if req.HasField(name) else None


class EntryService(entry_grpc.EntryBase):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    @property
    def _td(self) -> TrustDomain:
        return self.ctx.trust_domain

    async def CountEntries(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        filters = entry_filters(req.filter, self._td) if req.HasField("filter") else {}
        count = await self.ctx.datastore.count_entries(**filters)
        await stream.send_message(entry_pb2.CountEntriesResponse(count=count))

    async def ListEntries(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        check_page_size(req.page_size)
        filters = entry_filters(req.filter, self._td) if req.HasField("filter") else {}
        entries, token = await self.ctx.datastore.list_entries(
            **filters, page_size=req.page_size, page_token=req.page_token
        )
        mask = _mask(req)
        await stream.send_message(
            entry_pb2.ListEntriesResponse(
                entries=[entry_to_proto(e, mask) for e in entries], next_page_token=token
            )
        )

    async def GetEntry(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        if not req.id:
            raise InvalidArgument("id: missing entry ID")
        entry = await self.ctx.datastore.fetch_entry(req.id)
        if entry is None:
            raise NotFound(f"entry {req.id!r} not found")
        await stream.send_message(entry_to_proto(entry, _mask(req)))

    async def BatchCreateEntry(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.entries))
        mask = _mask(req)
        parsed: list[RegistrationEntry | PlastronError] = []
        for msg in req.entries:
            try:
                parsed.append(entry_from_proto(msg, self._td))
            except PlastronError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if isinstance(p, RegistrationEntry)]
        created = iter(await self.ctx.datastore.create_entries(valid) if valid else [])
        results = []
        for item in parsed:
            outcome = item if isinstance(item, PlastronError) else next(created)
            if isinstance(outcome, PlastronError):
                result = entry_pb2.BatchCreateEntryResponse.Result(status=status_proto(outcome))
                existing = getattr(outcome, "existing", None)
                if isinstance(existing, RegistrationEntry):
                    result.entry.CopyFrom(entry_to_proto(existing, mask))
            else:
                result = entry_pb2.BatchCreateEntryResponse.Result(
                    status=status_proto(None), entry=entry_to_proto(outcome, mask)
                )
            results.append(result)
        await self.ctx.on_change()
        await stream.send_message(entry_pb2.BatchCreateEntryResponse(results=results))

    async def BatchUpdateEntry(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.entries))
        input_mask = mask_fields(_mask(req, "input_mask"))
        output_mask = _mask(req)
        results = []
        for msg in req.entries:
            try:
                updated = await self._update_one(msg, input_mask)
                results.append(
                    entry_pb2.BatchUpdateEntryResponse.Result(
                        status=status_proto(None),
                        entry=entry_to_proto(updated, output_mask),
                    )
                )
            except PlastronError as exc:
                results.append(entry_pb2.BatchUpdateEntryResponse.Result(status=status_proto(exc)))
        await self.ctx.on_change()
        await stream.send_message(entry_pb2.BatchUpdateEntryResponse(results=results))

    async def _update_one(
        self, msg: types_entry.Entry, input_mask: set[str] | None
    ) -> RegistrationEntry:
        if not msg.id:
            raise InvalidArgument("entry.id: missing entry ID")
        current = await self.ctx.datastore.fetch_entry(msg.id)
        if current is None:
            raise NotFound(f"entry {msg.id!r} not found")
        # Fill unmasked fields from the stored entry, then validate the whole result.
        merged = types_entry.Entry()
        merged.CopyFrom(entry_to_proto(current))
        for name in input_mask if input_mask is not None else ENTRY_MASK_FIELDS:
            field = merged.DESCRIPTOR.fields_by_name[name]
            if field.is_repeated:
                merged.ClearField(name)
                getattr(merged, name).extend(getattr(msg, name))
            elif field.message_type is not None:
                merged.ClearField(name)
                if msg.HasField(name):
                    getattr(merged, name).CopyFrom(getattr(msg, name))
            else:
                setattr(merged, name, getattr(msg, name))
        entry = entry_from_proto(merged, self._td)
        return await self.ctx.datastore.update_entry(entry, input_mask)

    async def BatchDeleteEntry(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        _check_batch(len(req.ids))
        results = []
        for entry_id in req.ids:
            try:
                if not entry_id:
                    raise InvalidArgument("ids: missing entry ID")
                await self.ctx.datastore.delete_entry(entry_id)
                results.append(
                    entry_pb2.BatchDeleteEntryResponse.Result(
                        status=status_proto(None), id=entry_id
                    )
                )
            except PlastronError as exc:
                results.append(
                    entry_pb2.BatchDeleteEntryResponse.Result(status=status_proto(exc), id=entry_id)
                )
        await self.ctx.on_change()
        await stream.send_message(entry_pb2.BatchDeleteEntryResponse(results=results))

    async def GetAuthorizedEntries(self, stream: Stream[Any, Any]) -> None:
        req = await stream.recv_message()
        assert req is not None
        entries = self._authorized()
        mask = _mask(req)
        if mask is None:
            encoded = self.ctx.cache.derived(entries, wire.encode_entry)
            await stream.send_message(wire.get_response(encoded))
            return
        await stream.send_message(
            entry_pb2.GetAuthorizedEntriesResponse(
                entries=[entry_to_proto(e, mask) for e in entries]
            )
        )

    async def SyncAuthorizedEntries(self, stream: Stream[Any, Any]) -> None:
        """SPIRE's protocol: small sets are sent whole; larger ones as revisions in pages of
        500, after which the agent asks for the entries it lacks by ID."""
        req = await stream.recv_message()
        if req is None:
            return
        entries = self._authorized()
        mask = _mask(req)
        if len(entries) <= SYNC_PAGE_SIZE:
            await stream.send_message(self._sync_entries(entries, mask, more=False))
            return
        revisions = self.ctx.cache.derived(entries, wire.encode_revision)
        for start in range(0, len(entries), SYNC_PAGE_SIZE):
            page = revisions[start : start + SYNC_PAGE_SIZE]
            more = start + SYNC_PAGE_SIZE < len(entries)
            await stream.send_message(wire.sync_revisions(page, more=more))
        by_id = {e.entry_id: e for e in entries}
        while True:
            ask = await stream.recv_message()
            if ask is None:
                return
            wanted = [by_id[i] for i in ask.ids if i in by_id]
            for start in range(0, max(len(wanted), 1), SYNC_PAGE_SIZE):
                page_entries = wanted[start : start + SYNC_PAGE_SIZE]
                more = start + SYNC_PAGE_SIZE < len(wanted)
                await stream.send_message(self._sync_entries(page_entries, mask, more=more))

    def _sync_entries(
        self, entries: Sequence[RegistrationEntry], mask: Any, *, more: bool
    ) -> entry_pb2.SyncAuthorizedEntriesResponse | Encoded:
        if mask is None:
            return wire.sync_entries(self.ctx.cache.derived(entries, wire.encode_entry), more=more)
        return entry_pb2.SyncAuthorizedEntriesResponse(
            entries=[entry_to_proto(e, mask) for e in entries], more=more
        )

    def _authorized(self) -> Sequence[RegistrationEntry]:
        agent = current_caller().agent
        assert agent is not None  # the AGENT policy guarantees it
        return self.ctx.cache.authorized_entries(agent.spiffe_id)


def _check_batch(n: int) -> None:
    if n > MAX_BATCH:
        raise InvalidArgument(f"batch of {n} items exceeds the maximum of {MAX_BATCH}")
