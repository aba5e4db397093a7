"""``server.experimental.cache_reload_interval`` (SPIRE's key) is how often the entry cache reads
the datastore's change events: what another server sharing the database wrote reaches this
server's cache within it, and not before (writes made through this server apply at once)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.entrycache import AuthorizedEntryCache

from .server_harness import TD, Harness, running_server

#: Long enough for the default 250 ms poll to have run several times on a loaded machine.
QUIET_SECONDS = 1.5


def entry(path: str) -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="",
        spiffe_id=TD.spiffe_id(path),
        parent_id=TD.spiffe_id("/spire/server"),
        selectors=(Selector("unix", "uid:1000"),),
    )


async def write_as_another_server(harness: Harness, path: str) -> tuple[str, AuthorizedEntryCache]:
    """An entry written straight to the shared datastore, as another server's API would."""
    datastore, cache = harness.server.datastore, harness.server.cache
    assert datastore is not None and cache is not None
    created = await datastore.create_entry(entry(path))
    return created.entry_id, cache


async def test_a_short_interval_brings_another_servers_write_in(tmp_path: Path) -> None:
    extra = 'experimental { cache_reload_interval = "50ms" }'
    async with running_server(tmp_path, extra_server=extra) as harness:
        entry_id, cache = await write_as_another_server(harness, "/seen")
        async with asyncio.timeout(30):
            while cache.entry(entry_id) is None:
                await asyncio.sleep(0.02)


async def test_a_long_interval_keeps_it_out_until_the_next_poll(tmp_path: Path) -> None:
    extra = 'experimental { cache_reload_interval = "5m" }'
    async with running_server(tmp_path, extra_server=extra) as harness:
        entry_id, cache = await write_as_another_server(harness, "/not-yet")
        await asyncio.sleep(QUIET_SECONDS)
        assert cache.entry(entry_id) is None
        await cache.refresh()  # what the next poll does
        assert cache.entry(entry_id) is not None
