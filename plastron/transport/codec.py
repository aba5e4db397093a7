"""grpclib's protobuf codec, also taking a response that is already serialized.

A handler that assembles a large response from cached bytes (the authorized-entry sync,
``server/api/authorized_wire.py``) sends it as :class:`Encoded`: parsing those bytes into a
message only for grpclib to serialize them again cost more than everything else in a
5,000-entry GetAuthorizedEntries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpclib.encoding.proto import ProtoCodec


@dataclass(frozen=True, slots=True)
class Encoded:
    """A ``message_type`` message already in its wire form."""

    data: bytes
    message_type: type[Any]


class PreEncodedProtoCodec(ProtoCodec):
    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            if message.message_type is not message_type:
                raise TypeError(
                    f"Message must be of type {message_type!r}, not {message.message_type!r}"
                )
            return message.data
        return super().encode(message, message_type)
