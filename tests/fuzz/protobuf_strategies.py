"""Hypothesis strategies for any protobuf message, built from its descriptor, and the
server-API methods as (path, request class) pairs. Field values mix interesting texts (SPIFFE
IDs, selectors, trust domains), random text and bytes, seeds, and every integer range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from tests.fuzz.fuzzing import mutated

_F = FieldDescriptor
INTERESTING_TEXT = [
    "", "example.org", "other.test", "spiffe://example.org", "spiffe://example.org/w",
    "spiffe://example.org/spire/server", "spiffe://example.org/spire/agent/join_token/x",
    "/w", "/spire/agent/x", "unix:uid:0", "unix", "uid:0", "x509pop", "join_token", "..",
    "a/../b", "%2F", "k\u00e9y", "*", "\x00", "MATCH_EXACT", "https://127.0.0.1:1/b",
    "default", "ROOTCA", "ALL",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
]  # fmt: skip
_INT_RANGES = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _ints(field: FieldDescriptor) -> Any:
    low, high = _INT_RANGES[field.type]
    edges = [v for v in (0, 1, -1, 60, 3600, 10_001, 2**31 - 1, low, high) if low <= v <= high]
    return st.sampled_from(edges) | st.integers(min_value=low, max_value=high)


def _scalar(field: FieldDescriptor, byte_seeds: Sequence[bytes]) -> Any:
    if field.type == _F.TYPE_STRING:
        return st.sampled_from(INTERESTING_TEXT) | st.text(max_size=40)
    if field.type == _F.TYPE_BYTES:
        seeds = list(byte_seeds) or [b"\x30\x00"]
        return st.sampled_from(seeds) | mutated(seeds) | st.binary(max_size=64)
    if field.type == _F.TYPE_BOOL:
        return st.booleans()
    if field.type in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return st.floats(width=32 if field.type == _F.TYPE_FLOAT else 64)
    if field.type == _F.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        return st.sampled_from(values) | st.integers(min_value=-5, max_value=99)
    return _ints(field)


def messages(descriptor: Descriptor, byte_seeds: Sequence[bytes] = (), depth: int = 0) -> Any:
    """Messages of ``descriptor`` with any subset of fields set (nested up to 3 levels)."""
    cls = message_factory.GetMessageClass(descriptor)
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.type == _F.TYPE_MESSAGE:
            sub = field.message_type
            if sub.GetOptions().map_entry:
                key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
                if value.type == _F.TYPE_MESSAGE:
                    continue
                fields[field.name] = st.dictionaries(
                    _scalar(key, byte_seeds), _scalar(value, byte_seeds), max_size=3
                )
                continue
            if depth >= 3:
                continue
            strategy = messages(sub, byte_seeds, depth + 1)
        else:
            strategy = _scalar(field, byte_seeds)
        if field.is_repeated:
            strategy = st.lists(strategy, max_size=3)
        fields[field.name] = strategy
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


@dataclass(frozen=True)
class Method:
    service: str  # short name, e.g. "Entry"
    path: str  # /package.Service/Method
    request: Descriptor
    streaming: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def request_class(self) -> type[Message]:
        return message_factory.GetMessageClass(self.request)


def methods_of(services: Sequence[ServiceDescriptor]) -> list[Method]:
    return [
        Method(
            service=svc.name,
            path=f"/{svc.full_name}/{m.name}",
            request=m.input_type,
            streaming=m.client_streaming or m.server_streaming,
        )
        for svc in services
        for m in svc.methods
    ]
