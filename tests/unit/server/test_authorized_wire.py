"""Authorized-entry responses assembled from per-entry encodings are the same messages as
those built field by field, and an entry is encoded again once it changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.api import authorized_wire as wire
from plastron.server.entryindex import EntryIndex
from plastron.spiffe.ids import SpiffeId, TrustDomain, server_id
from plastron.transport.codec import Encoded, PreEncodedProtoCodec
from plastron.wire.entries import entry_to_proto

TD = TrustDomain("example.org")


def decoded(encoded: Encoded) -> Any:
    """The message the codec would put on the wire, as the client reads it back."""
    data = PreEncodedProtoCodec().encode(encoded, encoded.message_type)
    return encoded.message_type.FromString(data)


def entries(count: int) -> list[RegistrationEntry]:
    return [
        RegistrationEntry(
            entry_id=f"id-{i}",
            spiffe_id=SpiffeId(TD, f"/w/{i}"),
            parent_id=SpiffeId(TD, "/spire/agent/x/1"),
            selectors=(Selector("unix", f"uid:{i}"), Selector("k8s", "ns:a b")),
            x509_svid_ttl=3600 + i,
            jwt_svid_ttl=300,
            federates_with=(TrustDomain("other.org"),),
            admin=i % 2 == 0,
            downstream=i % 3 == 0,
            expires_at=2**40 + i,
            dns_names=("a.example.org", "é.example.org"),
            revision_number=i * 1000,
            store_svid=True,
            hint="h" * (i * 40),  # lengths across the one/two-byte length boundary
            created_at=1_700_000_000 + i,
        )
        for i in range(count)
    ]


def test_get_response_equals_the_message_built_field_by_field() -> None:
    for count in (0, 1, 7):
        es = entries(count)
        got = decoded(wire.get_response([wire.encode_entry(e) for e in es]))
        want = entry_pb2.GetAuthorizedEntriesResponse(entries=[entry_to_proto(e) for e in es])
        assert got == want


def test_sync_pages_equal_the_messages_built_field_by_field() -> None:
    es = entries(5)
    encoded = [wire.encode_entry(e) for e in es]
    for more in (False, True):
        want_entries = entry_pb2.SyncAuthorizedEntriesResponse(
            entries=[entry_to_proto(e) for e in es], more=more
        )
        assert decoded(wire.sync_entries(encoded, more=more)) == want_entries
        revisions = [
            entry_pb2.EntryRevision(
                id=e.entry_id, revision_number=e.revision_number, created_at=e.created_at
            )
            for e in es
        ]
        want_revisions = entry_pb2.SyncAuthorizedEntriesResponse(
            entry_revisions=revisions, more=more
        )
        encoded_revisions = [wire.encode_revision(e) for e in es]
        assert decoded(wire.sync_revisions(encoded_revisions, more=more)) == want_revisions


def test_an_entry_is_encoded_again_once_it_changes() -> None:
    index = EntryIndex(server_id(TD))
    first = entries(1)[0]
    index.put(first)
    calls: list[str] = []

    def encode(e: RegistrationEntry) -> bytes:
        calls.append(e.hint)
        return wire.encode_entry(e)

    index.derived([first], encode)
    index.derived([first], encode)
    assert len(calls) == 1
    changed = dataclasses.replace(first, hint="changed", revision_number=1)
    index.remove(first.entry_id)
    index.put(changed)
    (again,) = index.derived([changed], encode)
    assert calls == ["", "changed"]
    assert decoded(wire.get_response([again])).entries[0].hint == "changed"
