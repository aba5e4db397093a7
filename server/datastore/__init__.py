"""The server's SQL datastore (SPIRE's DataStore "sql"): SQLite, PostgreSQL, MySQL/MariaDB."""

from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.records import (
    AttestedNode,
    CAJournal,
    EntryAlreadyExists,
    FederationRelationship,
    JoinToken,
    RegistrationEntry,
)
from plastron.server.datastore.store import DataStore, open_datastore

__all__ = [
    "AttestedNode",
    "CAJournal",
    "DataStore",
    "EntryAlreadyExists",
    "FederationRelationship",
    "JoinToken",
    "RegistrationEntry",
    "SqlConfig",
    "open_datastore",
]
