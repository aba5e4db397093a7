"""Selectors on the wire (spire.api.types.Selector)."""

from __future__ import annotations

from collections.abc import Sequence

from plastron.errors import InvalidArgument, PlastronError
from plastron.proto.spire.api.types import selector_pb2
from plastron.selector import Selector
from plastron.wire.limits import MAX_ENTRY_SELECTORS


def selector_from_proto(msg: selector_pb2.Selector, field: str) -> Selector:
    try:
        return Selector(msg.type, msg.value)
    except PlastronError as exc:
        raise InvalidArgument(f"{field}: {exc}") from None


def selectors_from_proto(
    msgs: Sequence[selector_pb2.Selector], field: str, limit: int = MAX_ENTRY_SELECTORS
) -> tuple[Selector, ...]:
    """At most ``limit`` selectors, each checked; InvalidArgument naming ``field``."""
    if len(msgs) > limit:
        raise InvalidArgument(f"{field}: more than {limit} selectors")
    return tuple(selector_from_proto(m, field) for m in msgs)


def selector_to_proto(sel: Selector) -> selector_pb2.Selector:
    return selector_pb2.Selector(type=sel.type, value=sel.value)
