"""SQLAlchemy Core tables, shaped after SPIRE's (pkg/server/datastore/sqlstore/models.go).

The Alembic migrations create these; a test checks the two never drift apart.

Every string compares byte for byte on every database (SPIFFE IDs, selectors, tokens and hints
are case- and space-sensitive). PostgreSQL and SQLite compare VARCHAR exactly; on MySQL and
MariaDB every ``_bin`` collation is PAD SPACE ('a' = 'a '), so there strings are stored as their
UTF-8 bytes in VARBINARY columns (:class:`ExactText`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

MAX_ENTRY_ID = 255
MAX_ID_LEN = 2048  # SPIFFE IDs (ASCII by spec)
MAX_TD_LEN = 255
MAX_SELECTOR_TYPE = 255
MAX_SELECTOR_VALUE = 1024
MAX_DNS_NAME = 255
MAX_HINT = 1024
MAX_SHORT = 255  # attestation type, serials, agent version, authority ids, URLs' profile

# MySQL index keys are limited to 3072 bytes: index a prefix (in bytes) of long values.
SELECTOR_VALUE_INDEX_PREFIX = 2000
HINT_INDEX_PREFIX = 1020
MYSQL_DIALECTS = ("mysql", "mariadb")
UTF8_MAX_BYTES = 4

TABLE_KW: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


class ExactText(TypeDecorator[str]):
    """A string of at most ``length`` characters that compares byte for byte: VARCHAR on
    PostgreSQL and SQLite; its UTF-8 bytes in VARBINARY(``length * bytes_per_char``) on
    MySQL and MariaDB, encoded on the way in and decoded on the way out."""

    impl = String
    cache_ok = True

    def __init__(self, length: int, bytes_per_char: int = UTF8_MAX_BYTES) -> None:
        super().__init__(length)
        self.max_bytes = length * bytes_per_char

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in MYSQL_DIALECTS:
            return dialect.type_descriptor(mysql.VARBINARY(self.max_bytes))
        return dialect.type_descriptor(self.impl_instance)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if value is not None and dialect.name in MYSQL_DIALECTS:
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8")
        return value  # type: ignore[no-any-return]

    # Elsewhere than MySQL the value passes through unchanged: no per-value call at all (a
    # full entry-cache rebuild reads 700,000 of these; the pass-through calls were 10% of it).
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name in MYSQL_DIALECTS:
            return super().bind_processor(dialect)
        return self.impl_instance.bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name in MYSQL_DIALECTS:
            return super().result_processor(dialect, coltype)
        return self.impl_instance.result_processor(dialect, coltype)


def text_str(length: int) -> ExactText:
    return ExactText(length)


def ascii_str(length: int) -> ExactText:
    """An identifier (SPIFFE ID, entry ID, token, hash): ASCII, so one byte per character."""
    return ExactText(length, bytes_per_char=1)


def blob() -> TypeEngine[bytes]:
    return LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def big_pk() -> TypeEngine[int]:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (a rowid alias), not BIGINT.
    return BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData()

bundles = Table(
    "bundles",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("trust_domain", ascii_str(MAX_TD_LEN), nullable=False, unique=True),
    Column("data", blob(), nullable=False),
    **TABLE_KW,
)

attested_node_entries = Table(
    "attested_node_entries",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("spiffe_id", ascii_str(MAX_ID_LEN), nullable=False, unique=True),
    Column("data_type", text_str(MAX_SHORT), nullable=False),
    Column("serial_number", ascii_str(MAX_SHORT), nullable=False),
    Column("expires_at", BigInteger(), nullable=False),
    Column("new_serial_number", ascii_str(MAX_SHORT), nullable=False),
    Column("new_expires_at", BigInteger(), nullable=False),
    Column("can_reattest", Boolean(), nullable=False),
    Column("agent_version", text_str(MAX_SHORT), nullable=False),
    Column("node_data", blob(), nullable=False),
    Index("idx_attested_node_entries_expires_at", "expires_at"),
    Index("idx_attested_node_entries_data_type", "data_type"),
    **TABLE_KW,
)

node_resolver_map_entries = Table(
    "node_resolver_map_entries",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("spiffe_id", ascii_str(MAX_ID_LEN), nullable=False),
    Column("type", text_str(MAX_SELECTOR_TYPE), nullable=False),
    Column("value", text_str(MAX_SELECTOR_VALUE), nullable=False),
    Index("idx_node_resolver_map_spiffe_id", "spiffe_id"),
    Index(
        "idx_node_resolver_map_type_value",
        "type",
        "value",
        mysql_length={"value": SELECTOR_VALUE_INDEX_PREFIX},
    ),
    **TABLE_KW,
)

registered_entries = Table(
    "registered_entries",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("entry_id", ascii_str(MAX_ENTRY_ID), nullable=False, unique=True),
    Column("spiffe_id", ascii_str(MAX_ID_LEN), nullable=False),
    Column("parent_id", ascii_str(MAX_ID_LEN), nullable=False),
    # sha256 of (spiffe_id, parent_id, selector set): makes "similar entry" checks atomic.
    Column("entry_hash", ascii_str(64), nullable=False, unique=True),
    Column("ttl", Integer(), nullable=False),
    Column("jwt_svid_ttl", Integer(), nullable=False),
    Column("admin", Boolean(), nullable=False),
    Column("downstream", Boolean(), nullable=False),
    Column("expiry", BigInteger(), nullable=False),
    Column("revision_number", BigInteger(), nullable=False),
    Column("store_svid", Boolean(), nullable=False),
    Column("hint", text_str(MAX_HINT), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Index("idx_registered_entries_spiffe_id", "spiffe_id"),
    Index("idx_registered_entries_parent_id", "parent_id"),
    Index("idx_registered_entries_expiry", "expiry"),
    Index("idx_registered_entries_hint", "hint", mysql_length={"hint": HINT_INDEX_PREFIX}),
    **TABLE_KW,
)


def entry_fk() -> ForeignKey:
    return ForeignKey("registered_entries.id", ondelete="CASCADE")


selectors = Table(
    "selectors",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("registered_entry_id", BigInteger(), entry_fk(), nullable=False),
    Column("type", text_str(MAX_SELECTOR_TYPE), nullable=False),
    Column("value", text_str(MAX_SELECTOR_VALUE), nullable=False),
    Index("idx_selectors_entry", "registered_entry_id"),
    Index(
        "idx_selectors_type_value",
        "type",
        "value",
        mysql_length={"value": SELECTOR_VALUE_INDEX_PREFIX},
    ),
    **TABLE_KW,
)

dns_names = Table(
    "dns_names",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("registered_entry_id", BigInteger(), entry_fk(), nullable=False),
    Column("value", text_str(MAX_DNS_NAME), nullable=False),
    Index("idx_dns_names_entry", "registered_entry_id"),
    **TABLE_KW,
)

federated_registration_entries = Table(
    "federated_registration_entries",
    metadata,
    Column("bundle_id", BigInteger(), ForeignKey("bundles.id"), primary_key=True),
    Column("registered_entry_id", BigInteger(), entry_fk(), primary_key=True),
    Index("idx_federated_registration_entries_entry", "registered_entry_id"),
    **TABLE_KW,
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    # HMAC-SHA256 of the token under the key with id key_id (server/datastore/token_key.py).
    Column("token_hash", ascii_str(64), nullable=False, unique=True),
    Column("key_id", ascii_str(16), nullable=False),
    Column("expiry", BigInteger(), nullable=False),
    # The node alias entry is made when the token is used: its parent ID names the token.
    Column("alias_spiffe_id", ascii_str(MAX_ID_LEN), nullable=True),
    Index("idx_join_tokens_expiry", "expiry"),
    **TABLE_KW,
)

# Credentials already exchanged for SVIDs (the agentless token exchange): a digest of each, kept
# until the credential expires, so servers sharing this datastore refuse a replay.
exchanged_credentials = Table(
    "exchanged_credentials",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("digest", ascii_str(64), nullable=False, unique=True),
    Column("expiry", BigInteger(), nullable=False),
    Index("idx_exchanged_credentials_expiry", "expiry"),
    **TABLE_KW,
)

federated_trust_domains = Table(
    "federated_trust_domains",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("trust_domain", ascii_str(MAX_TD_LEN), nullable=False, unique=True),
    Column("bundle_endpoint_url", text_str(MAX_ID_LEN), nullable=False),
    Column("bundle_endpoint_profile", ascii_str(32), nullable=False),
    Column("endpoint_spiffe_id", ascii_str(MAX_ID_LEN), nullable=False),
    Column("implicit", Boolean(), nullable=False),
    **TABLE_KW,
)

ca_journals = Table(
    "ca_journals",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("data", blob(), nullable=False),
    Column("active_x509_authority_id", ascii_str(MAX_SHORT), nullable=False),
    Index("idx_ca_journals_active_x509_authority_id", "active_x509_authority_id"),
    **TABLE_KW,
)

# Event ids must never be reused (caches track them as cursors): AUTOINCREMENT on SQLite.
registered_entries_events = Table(
    "registered_entries_events",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("entry_id", ascii_str(MAX_ENTRY_ID), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Index("idx_registered_entries_events_created_at", "created_at"),
    sqlite_autoincrement=True,
    **TABLE_KW,
)

attested_node_entries_events = Table(
    "attested_node_entries_events",
    metadata,
    Column("id", big_pk(), primary_key=True, autoincrement=True),
    Column("spiffe_id", ascii_str(MAX_ID_LEN), nullable=False),
    Column("created_at", BigInteger(), nullable=False),
    Index("idx_attested_node_entries_events_created_at", "created_at"),
    sqlite_autoincrement=True,
    **TABLE_KW,
)
