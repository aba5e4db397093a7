"""The narrow slice of the datastore the CA needs: its bundle and its journal.

``CAStore`` is what the CA codes against. ``MemoryCAStore`` keeps both in memory (unit tests,
single-shot tools); ``DataStoreCAStore`` adapts the server's ``DataStore``
(:mod:`plastron.datastore`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from plastron.datastore import DataStore
from plastron.records import CAJournal
from plastron.spiffe.ids import TrustDomain


@dataclass(frozen=True)
class StoredJournal:
    """A CA journal row: id 0 means "not stored yet"."""

    id: int
    data: bytes
    active_x509_authority_id: str


class CAStore(Protocol):
    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        """Atomically replace the bundle of ``td`` with ``fn(current)``; return the new one."""
        ...

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None: ...

    async def set_ca_journal(self, journal: StoredJournal) -> StoredJournal:
        """Create (id 0) or update a journal row; return it with its id."""
        ...

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> StoredJournal | None: ...


class MemoryCAStore:
    """An in-process CAStore."""

    def __init__(self) -> None:
        self._bundles: dict[TrustDomain, bytes] = {}
        self._journals: dict[int, StoredJournal] = {}
        self._lock = asyncio.Lock()
        self.bundle_writes = 0

    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        async with self._lock:
            new = fn(self._bundles.get(td))
            self._bundles[td] = new
            self.bundle_writes += 1
            return new

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None:
        return self._bundles.get(td)

    async def set_ca_journal(self, journal: StoredJournal) -> StoredJournal:
        async with self._lock:
            if journal.id == 0:
                journal = replace(journal, id=max(self._journals, default=0) + 1)
            self._journals[journal.id] = journal
            return journal

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> StoredJournal | None:
        if not active_x509_authority_id:
            return None
        for journal in self._journals.values():
            if journal.active_x509_authority_id == active_x509_authority_id:
                return journal
        return None


class DataStoreCAStore:
    """Adapts the server's DataStore to CAStore."""

    def __init__(self, datastore: DataStore) -> None:
        self._ds = datastore

    async def update_bundle(self, td: TrustDomain, fn: Callable[[bytes | None], bytes]) -> bytes:
        return await self._ds.update_bundle(td, fn)

    async def fetch_bundle(self, td: TrustDomain) -> bytes | None:
        return await self._ds.fetch_bundle(td)

    async def set_ca_journal(self, journal: StoredJournal) -> StoredJournal:
        row = await self._ds.set_ca_journal(
            CAJournal(
                id=journal.id,
                data=journal.data,
                active_x509_authority_id=journal.active_x509_authority_id,
            )
        )
        return StoredJournal(row.id, row.data, row.active_x509_authority_id)

    async def fetch_ca_journal(self, active_x509_authority_id: str) -> StoredJournal | None:
        row = await self._ds.fetch_ca_journal(active_x509_authority_id)
        if row is None:
            return None
        return StoredJournal(row.id, row.data, row.active_x509_authority_id)
