"""Initial schema: bundles, nodes, entries, join tokens, federation, CA journal, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KW: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _ascii(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
    )


def _blob() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _pk() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def _entry_fk() -> sa.Column[int]:
    return sa.Column(
        "registered_entry_id",
        sa.BigInteger(),
        sa.ForeignKey("registered_entries.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "bundles",
        _pk(),
        sa.Column("trust_domain", _ascii(255), nullable=False, unique=True),
        sa.Column("data", _blob(), nullable=False),
        **KW,
    )
    op.create_table(
        "attested_node_entries",
        _pk(),
        sa.Column("spiffe_id", _ascii(2048), nullable=False, unique=True),
        sa.Column("data_type", sa.String(255), nullable=False),
        sa.Column("serial_number", _ascii(255), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("new_serial_number", _ascii(255), nullable=False),
        sa.Column("new_expires_at", sa.BigInteger(), nullable=False),
        sa.Column("can_reattest", sa.Boolean(), nullable=False),
        sa.Column("agent_version", sa.String(255), nullable=False),
        sa.Column("node_data", _blob(), nullable=False),
        **KW,
    )
    op.create_index("idx_attested_node_entries_expires_at", "attested_node_entries", ["expires_at"])
    op.create_index("idx_attested_node_entries_data_type", "attested_node_entries", ["data_type"])
    op.create_table(
        "node_resolver_map_entries",
        _pk(),
        sa.Column("spiffe_id", _ascii(2048), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        **KW,
    )
    op.create_index("idx_node_resolver_map_spiffe_id", "node_resolver_map_entries", ["spiffe_id"])
    op.create_index(
        "idx_node_resolver_map_type_value",
        "node_resolver_map_entries",
        ["type", "value"],
        mysql_length={"value": 500},
    )
    _create_entry_tables()
    _create_other_tables()


def _create_entry_tables() -> None:
    op.create_table(
        "registered_entries",
        _pk(),
        sa.Column("entry_id", _ascii(255), nullable=False, unique=True),
        sa.Column("spiffe_id", _ascii(2048), nullable=False),
        sa.Column("parent_id", _ascii(2048), nullable=False),
        sa.Column("entry_hash", _ascii(64), nullable=False, unique=True),
        sa.Column("ttl", sa.Integer(), nullable=False),
        sa.Column("jwt_svid_ttl", sa.Integer(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("downstream", sa.Boolean(), nullable=False),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        sa.Column("revision_number", sa.BigInteger(), nullable=False),
        sa.Column("store_svid", sa.Boolean(), nullable=False),
        sa.Column("hint", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        **KW,
    )
    op.create_index("idx_registered_entries_spiffe_id", "registered_entries", ["spiffe_id"])
    op.create_index("idx_registered_entries_parent_id", "registered_entries", ["parent_id"])
    op.create_index("idx_registered_entries_expiry", "registered_entries", ["expiry"])
    op.create_index(
        "idx_registered_entries_hint", "registered_entries", ["hint"], mysql_length={"hint": 255}
    )
    op.create_table(
        "selectors",
        _pk(),
        _entry_fk(),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        **KW,
    )
    op.create_index("idx_selectors_entry", "selectors", ["registered_entry_id"])
    op.create_index(
        "idx_selectors_type_value", "selectors", ["type", "value"], mysql_length={"value": 500}
    )
    op.create_table(
        "dns_names",
        _pk(),
        _entry_fk(),
        sa.Column("value", sa.String(255), nullable=False),
        **KW,
    )
    op.create_index("idx_dns_names_entry", "dns_names", ["registered_entry_id"])
    op.create_table(
        "federated_registration_entries",
        sa.Column("bundle_id", sa.BigInteger(), sa.ForeignKey("bundles.id"), primary_key=True),
        sa.Column(
            "registered_entry_id",
            sa.BigInteger(),
            sa.ForeignKey("registered_entries.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        **KW,
    )
    op.create_index(
        "idx_federated_registration_entries_entry",
        "federated_registration_entries",
        ["registered_entry_id"],
    )


def _create_other_tables() -> None:
    op.create_table(
        "join_tokens",
        _pk(),
        sa.Column("token", _ascii(255), nullable=False, unique=True),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        **KW,
    )
    op.create_index("idx_join_tokens_expiry", "join_tokens", ["expiry"])
    op.create_table(
        "federated_trust_domains",
        _pk(),
        sa.Column("trust_domain", _ascii(255), nullable=False, unique=True),
        sa.Column("bundle_endpoint_url", sa.String(2048), nullable=False),
        sa.Column("bundle_endpoint_profile", _ascii(32), nullable=False),
        sa.Column("endpoint_spiffe_id", _ascii(2048), nullable=False),
        sa.Column("implicit", sa.Boolean(), nullable=False),
        **KW,
    )
    op.create_table(
        "ca_journals",
        _pk(),
        sa.Column("data", _blob(), nullable=False),
        sa.Column("active_x509_authority_id", _ascii(255), nullable=False),
        **KW,
    )
    op.create_index(
        "idx_ca_journals_active_x509_authority_id", "ca_journals", ["active_x509_authority_id"]
    )
    for name, key, length in (
        ("registered_entries_events", "entry_id", 255),
        ("attested_node_entries_events", "spiffe_id", 2048),
    ):
        op.create_table(
            name,
            _pk(),
            sa.Column(key, _ascii(length), nullable=False),
            sa.Column("created_at", sa.BigInteger(), nullable=False),
            sqlite_autoincrement=True,
            **KW,
        )
        op.create_index(f"idx_{name}_created_at", name, ["created_at"])


def downgrade() -> None:
    for name in (
        "attested_node_entries_events",
        "registered_entries_events",
        "ca_journals",
        "federated_trust_domains",
        "join_tokens",
        "federated_registration_entries",
        "dns_names",
        "selectors",
        "registered_entries",
        "node_resolver_map_entries",
        "attested_node_entries",
        "bundles",
    ):
        op.drop_table(name)
