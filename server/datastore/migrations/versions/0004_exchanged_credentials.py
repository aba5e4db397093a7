"""Credentials already exchanged for SVIDs by the agentless token exchange (replay refusal
across servers sharing the datastore).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchanged_credentials",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "digest",
            sa.String(64).with_variant(mysql.VARBINARY(64), "mysql", "mariadb"),
            nullable=False,
            unique=True,
        ),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("idx_exchanged_credentials_expiry", "exchanged_credentials", ["expiry"])


def downgrade() -> None:
    op.drop_index("idx_exchanged_credentials_expiry", "exchanged_credentials")
    op.drop_table("exchanged_credentials")
