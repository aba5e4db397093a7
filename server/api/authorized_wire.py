"""Authorized entries on the wire, each entry encoded once per version instead of per call.

Building an Entry message field by field in Python took about 30 µs per entry: at 100 entries
per agent that was 3 ms of server CPU for every agent sync, the bulk of it. Each entry's
serialized Entry (and, for large syncs, its EntryRevision) is made once and kept with the
cache (dropped when the entry changes); a response is the concatenation of those fields,
handed to grpclib as it is (plastron/transport/codec.py). Requests with an output mask are
answered the ordinary way.
"""

from __future__ import annotations

from collections.abc import Sequence

from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.records import RegistrationEntry
from plastron.transport.codec import Encoded
from plastron.wire.entries import entry_to_proto

# Wire tags (field number << 3 | LEN) of the repeated message fields the responses carry.
_GET_ENTRIES = b"\x0a"  # GetAuthorizedEntriesResponse.entries = 1
_SYNC_REVISIONS = b"\x0a"  # SyncAuthorizedEntriesResponse.entry_revisions = 1
_SYNC_ENTRIES = b"\x12"  # SyncAuthorizedEntriesResponse.entries = 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_prefixed(payload: bytes) -> bytes:
    return _varint(len(payload)) + payload


def encode_entry(entry: RegistrationEntry) -> bytes:
    """The entry's Entry message, serialized and length-prefixed."""
    return _length_prefixed(entry_to_proto(entry).SerializeToString())


def encode_revision(entry: RegistrationEntry) -> bytes:
    """The entry's EntryRevision message, serialized and length-prefixed: made (and kept) only
    for the entries of agents with more than a page of them, apart from the Entry encoding
    every fetched entry keeps (at 100,000 entries the pair was about 10 MiB more)."""
    revision = entry_pb2.EntryRevision(
        id=entry.entry_id,
        revision_number=entry.revision_number,
        created_at=entry.created_at,
    )
    return _length_prefixed(revision.SerializeToString())


def _joined(tag: bytes, parts: Sequence[bytes]) -> bytes:
    pieces = [tag] * (2 * len(parts))
    pieces[1::2] = parts
    return b"".join(pieces)


def get_response(encoded: Sequence[bytes]) -> Encoded:
    body = _joined(_GET_ENTRIES, encoded)
    return Encoded(body, entry_pb2.GetAuthorizedEntriesResponse)


def sync_entries(encoded: Sequence[bytes], *, more: bool = False) -> Encoded:
    body = _joined(_SYNC_ENTRIES, encoded)
    return Encoded(body + _more(more), entry_pb2.SyncAuthorizedEntriesResponse)


def sync_revisions(revisions: Sequence[bytes], *, more: bool) -> Encoded:
    body = _joined(_SYNC_REVISIONS, revisions)
    return Encoded(body + _more(more), entry_pb2.SyncAuthorizedEntriesResponse)


def _more(more: bool) -> bytes:
    return b"\x18\x01" if more else b""  # SyncAuthorizedEntriesResponse.more = 3 (varint)
