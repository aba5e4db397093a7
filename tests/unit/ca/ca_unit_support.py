"""Helpers for the CA unit tests: a real MemoryKeyManager wrapped to count and observe calls."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from plastron.clock import ManualClock
from plastron.errors import KeyManagerUnavailable
from plastron.keymanager import KeyInfo, KeyType, MemoryKeyManager, PrivateKey, PublicKey
from plastron.server.ca.config import CAConfig
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.store import MemoryCAStore
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain

TD = TrustDomain("example.org")
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class ObservedKeyManager:
    """Delegates to a real KeyManager; counts generate/destroy calls and can be made to fail."""

    def __init__(
        self,
        inner: MemoryKeyManager | None = None,
        *,
        blocking: bool = False,
        clock: ManualClock | None = None,
    ) -> None:
        self.inner = inner or MemoryKeyManager()
        self.blocking = blocking
        self.clock = clock or ManualClock(START)
        self.generated: list[str] = []
        self.destroyed: list[tuple[str, PublicKey, dt.datetime]] = []
        self.fail_signer = False
        self.fail_generate = False

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        if self.fail_generate:
            raise KeyManagerUnavailable("key store unreachable (test)")
        self.generated.append(key_id)
        return self.inner.generate_key(key_id, key_type)

    def get_public_key(self, key_id: str) -> PublicKey:
        return self.inner.get_public_key(key_id)

    def get_public_keys(self) -> list[KeyInfo]:
        return self.inner.get_public_keys()

    def signer(self, key_id: str) -> PrivateKey:
        if self.fail_signer:
            raise KeyManagerUnavailable("key store unreachable (test)")
        return self.inner.signer(key_id)

    def destroy_key(self, key_id: str) -> None:
        self.destroyed.append((key_id, self.inner.get_public_key(key_id), self.clock.now()))
        self.inner.destroy_key(key_id)


async def open_ca(
    config: CAConfig, km: ObservedKeyManager, store: MemoryCAStore, clock: ManualClock
) -> ServerCA:
    return await ServerCA.open(config=config, key_manager=km, store=store, clock=clock)


async def bundle_of(store: MemoryCAStore) -> Bundle:
    data = await store.fetch_bundle(TD)
    assert data is not None
    return Bundle.from_json(data)


def skid(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def akid(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
