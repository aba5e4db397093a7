"""The server CA: X.509 CA and JWT signer in A/B slots, their journal, the rotator, signing.

Entry point: ``await ServerCA.open(config=..., key_manager=..., store=..., clock=...)``, then
``asyncio.create_task(ca.rotator.run(stop))``.
"""

from plastron.server.ca.authorities import AuthorityManager
from plastron.server.ca.config import CAConfig
from plastron.server.ca.journal import AuthorityStatus, Journal, JwtKeyRecord, X509CARecord
from plastron.server.ca.rotator import Rotator
from plastron.server.ca.server_ca import ServerCA
from plastron.server.ca.slots import X509CA, JwtKey
from plastron.server.ca.store import CAStore, DataStoreCAStore, MemoryCAStore, StoredJournal

__all__ = [
    "X509CA",
    "AuthorityManager",
    "AuthorityStatus",
    "CAConfig",
    "CAStore",
    "DataStoreCAStore",
    "Journal",
    "JwtKey",
    "JwtKeyRecord",
    "MemoryCAStore",
    "Rotator",
    "ServerCA",
    "StoredJournal",
    "X509CARecord",
]
