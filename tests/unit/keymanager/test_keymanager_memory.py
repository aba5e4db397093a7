"""The memory KeyManager passes the shared conformance suite."""

from __future__ import annotations

import pytest

from plastron.keymanager import KeyManager, KeyType, MemoryKeyManager
from tests.conformance.keymanager import KeyManagerConformance


class TestMemoryKeyManager(KeyManagerConformance):
    @pytest.fixture
    def keymanager(self) -> KeyManager:
        return MemoryKeyManager()


def test_memory_manager_is_a_keymanager() -> None:
    assert isinstance(MemoryKeyManager(), KeyManager)


def test_repr_names_ids_not_key_material() -> None:
    km = MemoryKeyManager()
    km.generate_key("x509-CA-A", KeyType.EC_P256)
    text = repr(km)
    assert "x509-CA-A" in text
    assert "PRIVATE" not in text
