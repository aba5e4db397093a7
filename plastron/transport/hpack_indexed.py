"""hpack's Decoder with a short path for header blocks made only of one-byte table indexes.

A client repeating a call (an agent syncing every few seconds on its connection) sends the same
request headers every time; after the first call each of them is in HPACK's static or dynamic
table, and the whole block is one byte per header: an *indexed header field* (RFC 7541 section
6.1, first bit 1, the index in the other seven). hpack decodes each through a general loop
(integer decoding, memoryview slices, a debug log call per field): about 35 µs for a gRPC
request's seven headers, about 6% of the server's CPU for such a call.

:class:`IndexedFastDecoder` decodes such a block directly: each byte's index looked up in the
table exactly as hpack does (``HeaderTable.get_by_index``, whose invalid-index error is
hpack's), the header list size checked against ``max_header_list_size`` after each field as
hpack does, and the table size checked at the end as hpack does. Any other block, including
an index of 0 (an error) or of 127 and above (a multi-byte integer), goes to hpack unchanged.
Indexed fields never change the dynamic table, so decoding them here leaves the decoder in the
state hpack would. Only ``raw=True`` (what h2 asks for) takes the short path.
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack import Decoder, HeaderTuple
from hpack.exceptions import OversizedHeaderListError

_ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1: a header's size is name + value + 32


def _one_byte_indexes(data: bytes | memoryview) -> bool:
    # 0x80 is index 0 (invalid), 0xFF starts a multi-byte index: both go to hpack.
    return bool(data) and all(0x80 < byte < 0xFF for byte in data)


class IndexedFastDecoder(Decoder):
    """hpack's Decoder; blocks of one-byte indexed fields are decoded without its general
    loop (same headers, same errors, same table)."""

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        if not raw or not _one_byte_indexes(data):
            return super().decode(data, raw)
        table = self.header_table
        headers: list[HeaderTuple] = []
        size = 0
        for byte in data:
            name, value = table.get_by_index(byte & 0x7F)
            headers.append(HeaderTuple(name, value))
            size += len(name) + len(value) + _ENTRY_OVERHEAD
            if size > self.max_header_list_size:
                msg = f"A header list larger than {self.max_header_list_size} has been received"
                raise OversizedHeaderListError(msg)
        self._assert_valid_table_size()
        return headers


def replace_decoder(current: Decoder) -> IndexedFastDecoder:
    """An :class:`IndexedFastDecoder` with the limits of a new connection's ``current`` one
    (which must not have decoded anything yet)."""
    decoder = IndexedFastDecoder(max_header_list_size=current.max_header_list_size)
    decoder.max_allowed_table_size = current.max_allowed_table_size
    return decoder
