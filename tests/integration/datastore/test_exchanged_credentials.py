"""Exchanged credentials: recorded once (a second record, from any server sharing the store,
is refused), pruned after expiry, and malformed digests refused."""

from __future__ import annotations

import hashlib

import pytest

from plastron.clock import ManualClock
from plastron.errors import InvalidArgument
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore


async def test_record_once_across_stores_and_prune(scratch_db: SqlConfig) -> None:
    first = await open_datastore(scratch_db, clock=ManualClock())
    second = await open_datastore(scratch_db, clock=ManualClock())
    try:
        digest = hashlib.sha256(b"credential").hexdigest()
        assert await first.record_exchanged_credential(digest, 1000) is True
        assert await second.record_exchanged_credential(digest, 1000) is False
        assert await first.prune_exchanged_credentials(1000) == 0
        assert await first.prune_exchanged_credentials(1001) == 1
        assert await second.record_exchanged_credential(digest, 2000) is True
        with pytest.raises(InvalidArgument, match="64 lower-case hex"):
            await first.record_exchanged_credential("ABC", 1)
    finally:
        await first.close()
        await second.close()
