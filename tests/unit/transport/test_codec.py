"""The server codec sends pre-serialized responses as they are, and only as the type the
method declares; ordinary messages are serialized as before."""

from __future__ import annotations

import pytest

from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.transport.codec import Encoded, PreEncodedProtoCodec


def test_pre_encoded_bytes_pass_through_and_messages_serialize() -> None:
    codec = PreEncodedProtoCodec()
    message = entry_pb2.GetAuthorizedEntriesResponse()
    message.entries.add(id="e1")
    data = message.SerializeToString()
    kind = entry_pb2.GetAuthorizedEntriesResponse
    assert codec.encode(Encoded(data, kind), kind) == data
    assert codec.encode(message, kind) == data


def test_pre_encoded_bytes_of_another_type_are_refused() -> None:
    codec = PreEncodedProtoCodec()
    wrong = Encoded(b"", entry_pb2.SyncAuthorizedEntriesResponse)
    with pytest.raises(TypeError):
        codec.encode(wrong, entry_pb2.GetAuthorizedEntriesResponse)
