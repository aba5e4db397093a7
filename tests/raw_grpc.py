"""Send bytes that are not a valid protobuf message to a gRPC method, as a hostile peer could:
grpclib's codec serializes whatever ``SerializeToString`` returns."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError


class RawMessage:
    """A request whose wire bytes are exactly ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf method grpclib calls
        return self.data


async def call_with_raw_bytes(
    channel: Channel,
    method: str,
    data: bytes,
    reply_type: type[Message],
    *,
    metadata: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> GRPCError | None:
    """Send ``data`` as the only request message of ``method``; the status it ends with (None
    for OK)."""
    cardinality = Cardinality.STREAM_STREAM
    try:
        async with channel.request(
            method, cardinality, RawMessage, reply_type, timeout=timeout, metadata=metadata
        ) as stream:
            await stream.send_message(RawMessage(data), end=True)
            while await stream.recv_message() is not None:
                pass
    except GRPCError as exc:
        return exc
    return None
