"""MySQL/MariaDB: every string column becomes VARBINARY, so comparisons are byte for byte.

Their ``_bin`` collations compare case-sensitively but PAD SPACE: a selector value with a
trailing space matched the same value without it. ALTER … MODIFY to VARBINARY keeps each value's
UTF-8 bytes. The prefix indexes are rebuilt with their prefix in bytes. PostgreSQL and SQLite
compare VARCHAR exactly already: nothing changes there.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (table, column, characters, bytes per character as stored before: 1 for ascii, 4 for utf8mb4)
COLUMNS = (
    ("bundles", "trust_domain", 255, 1),
    ("attested_node_entries", "spiffe_id", 2048, 1),
    ("attested_node_entries", "data_type", 255, 4),
    ("attested_node_entries", "serial_number", 255, 1),
    ("attested_node_entries", "new_serial_number", 255, 1),
    ("attested_node_entries", "agent_version", 255, 4),
    ("node_resolver_map_entries", "spiffe_id", 2048, 1),
    ("node_resolver_map_entries", "type", 255, 4),
    ("node_resolver_map_entries", "value", 1024, 4),
    ("registered_entries", "entry_id", 255, 1),
    ("registered_entries", "spiffe_id", 2048, 1),
    ("registered_entries", "parent_id", 2048, 1),
    ("registered_entries", "entry_hash", 64, 1),
    ("registered_entries", "hint", 1024, 4),
    ("selectors", "type", 255, 4),
    ("selectors", "value", 1024, 4),
    ("dns_names", "value", 255, 4),
    ("join_tokens", "token", 255, 1),
    ("federated_trust_domains", "trust_domain", 255, 1),
    ("federated_trust_domains", "bundle_endpoint_url", 2048, 4),
    ("federated_trust_domains", "bundle_endpoint_profile", 32, 1),
    ("federated_trust_domains", "endpoint_spiffe_id", 2048, 1),
    ("ca_journals", "active_x509_authority_id", 255, 1),
    ("registered_entries_events", "entry_id", 255, 1),
    ("attested_node_entries_events", "spiffe_id", 2048, 1),
)
# Indexes over a prefix of one column: (name, table, columns, that column).
PREFIX_INDEXES = (
    ("idx_node_resolver_map_type_value", "node_resolver_map_entries", ["type", "value"], "value"),
    ("idx_selectors_type_value", "selectors", ["type", "value"], "value"),
    ("idx_registered_entries_hint", "registered_entries", ["hint"], "hint"),
)
PREFIX_CHARS = {"value": 500, "hint": 255}  # as 0001 made them (characters of utf8mb4)
PREFIX_BYTES = {"value": 2000, "hint": 1020}  # the same key size, now counted in bytes


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if not _is_mysql():
        return
    for name, table, _columns, _long in PREFIX_INDEXES:
        op.drop_index(name, table_name=table)
    for table, column, chars, per_char in COLUMNS:
        op.alter_column(
            table,
            column,
            type_=mysql.VARBINARY(chars * per_char),
            existing_nullable=False,
        )
    for name, table, columns, long_column in PREFIX_INDEXES:
        op.create_index(name, table, columns, mysql_length={long_column: PREFIX_BYTES[long_column]})


def downgrade() -> None:
    if not _is_mysql():
        return
    for name, table, _columns, _long in PREFIX_INDEXES:
        op.drop_index(name, table_name=table)
    for table, column, chars, per_char in COLUMNS:
        charset, collation = ("ascii", "ascii_bin") if per_char == 1 else ("utf8mb4", "utf8mb4_bin")
        op.alter_column(
            table,
            column,
            type_=mysql.VARCHAR(chars, charset=charset, collation=collation),
            existing_nullable=False,
        )
    for name, table, columns, long_column in PREFIX_INDEXES:
        op.create_index(name, table, columns, mysql_length={long_column: PREFIX_CHARS[long_column]})
