"""IndexedFastDecoder decodes exactly as hpack's Decoder: same headers, same errors, same table,
for blocks of one-byte indexes (its short path) and everything else (hpack's own path)."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder, HPACKDecodingError

from plastron.transport.hpack_indexed import IndexedFastDecoder, replace_decoder

REQUEST = [
    (":method", "POST"),
    (":scheme", "https"),
    (":path", "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries"),
    (":authority", "127.0.0.1:8081"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python-grpclib"),
]


def _pair(max_header_list_size: int = 65536) -> tuple[Decoder, IndexedFastDecoder]:
    reference = Decoder(max_header_list_size=max_header_list_size)
    return reference, replace_decoder(reference)


def _outcome(decoder: Decoder, block: bytes) -> object:
    try:
        return list(decoder.decode(block, raw=True))
    except HPACKDecodingError as exc:
        return type(exc), str(exc)


def _table(decoder: Decoder) -> object:
    table = decoder.header_table
    return list(table.dynamic_entries), table.maxsize, decoder.header_table_size


def test_a_repeated_request_decodes_as_hpack_decodes_it() -> None:
    reference, fast = _pair()
    encoder = Encoder()
    for _ in range(3):  # the first block adds to the table, the next are all indexes
        block = encoder.encode(REQUEST)
        assert _outcome(fast, block) == _outcome(reference, block)
        assert _table(fast) == _table(reference)
    assert len(block) == len(REQUEST)  # the short path was taken


def test_random_blocks_decode_as_hpack_decodes_them() -> None:
    """Random blocks of indexed fields (valid, index 0, past the table, multi-byte), and
    literals mixed in: headers or error, and the table afterwards, are hpack's."""
    rng = random.Random(18)
    encoder = Encoder()
    reference, fast = _pair()
    warm = encoder.encode([*REQUEST, ("x-extra", "value")])
    assert _outcome(fast, warm) == _outcome(reference, warm)
    for _ in range(3000):
        block = bytes(
            rng.choice([0x80, 0xFF, 0x81, 0xBD, 0xBE, 0xC4, 0xC5, 0xFE])
            for _ in range(rng.randint(1, 8))
        )
        if rng.random() < 0.1:
            block += encoder.encode([("x-new", str(rng.random()))])
        assert _outcome(fast, block) == _outcome(reference, block), block.hex()
        assert _table(fast) == _table(reference)


@pytest.mark.parametrize("limit", [0, 42, 100, 166, 167, 200])
def test_the_header_list_size_limit_is_hpack_s(limit: int) -> None:
    reference, fast = _pair(max_header_list_size=limit)
    # :method GET, :path /, :scheme https, :scheme http: 42 + 38 + 44 + 43 = 167 bytes
    block = bytes([0x82, 0x84, 0x87, 0x86])
    assert _outcome(fast, block) == _outcome(reference, block)
    assert isinstance(_outcome(fast, block), list) == (limit >= 167)


def test_a_table_not_shrunk_as_required_is_refused() -> None:
    reference, fast = _pair()
    for decoder in (reference, fast):
        decoder.max_allowed_table_size = 100  # as after our SETTINGS_HEADER_TABLE_SIZE ack
    assert _outcome(fast, b"\x82") == _outcome(reference, b"\x82")
    assert not isinstance(_outcome(fast, b"\x82"), list)


def test_the_replacement_keeps_the_limits() -> None:
    reference = Decoder(max_header_list_size=1234)
    reference.max_allowed_table_size = 555
    fast = replace_decoder(reference)
    assert (fast.max_header_list_size, fast.max_allowed_table_size) == (1234, 555)
