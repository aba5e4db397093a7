"""Fixtures for the CA unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ca_unit_support import START, TD, ObservedKeyManager, open_ca

from plastron.clock import ManualClock
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def km(clock: ManualClock) -> ObservedKeyManager:
    return ObservedKeyManager(clock=clock)


@pytest.fixture
def store() -> MemoryCAStore:
    return MemoryCAStore()


@pytest.fixture
def config() -> CAConfig:
    return CAConfig(trust_domain=TD)


@pytest.fixture
async def ca(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> AsyncIterator[ServerCA]:
    server_ca = await open_ca(config, km, store, clock)
    yield server_ca
    server_ca.close()
