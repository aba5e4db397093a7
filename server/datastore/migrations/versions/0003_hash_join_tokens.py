"""Join tokens are stored as HMAC-SHA256 digests under the server's join-token key.

Existing rows (plaintext tokens) are hashed under the key of the server that migrates, so a
token handed out before the upgrade still attests once afterwards; the plaintext column is
dropped. A token now carries its node alias, whose entry is made when the token is used (the
entry's parent ID names the token).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

from plastron.errors import DataStoreError
from plastron.server.datastore.migrate import HASHER_ATTRIBUTE
from plastron.server.datastore.token_key import JoinTokenHasher

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ascii(length: int) -> sa.types.TypeEngine[str]:
    # As schema.ascii_str: VARBINARY on MySQL/MariaDB since 0002 (byte-exact comparisons).
    return sa.String(length).with_variant(mysql.VARBINARY(length), "mysql", "mariadb")


def _stored_tokens() -> tuple[list[tuple[int, str]], JoinTokenHasher | None]:
    """The plaintext rows, and the key to hash them under (refused before any DDL, which
    MySQL would commit on the spot, if rows need a key that is not there)."""
    rows = [
        (int(row_id), stored.decode("ascii") if isinstance(stored, bytes) else str(stored))
        for row_id, stored in op.get_bind().execute(sa.text("SELECT id, token FROM join_tokens"))
    ]
    hasher = context.config.attributes.get(HASHER_ATTRIBUTE)
    if rows and not isinstance(hasher, JoinTokenHasher):
        raise DataStoreError(
            f"datastore: {len(rows)} stored join tokens must be hashed under the server's "
            "join-token key; let the server run this migration (schema revision 0003)"
        )
    return rows, hasher


def upgrade() -> None:
    rows, hasher = _stored_tokens()
    with op.batch_alter_table("join_tokens") as batch:
        batch.add_column(sa.Column("token_hash", _ascii(64), nullable=True))
        batch.add_column(sa.Column("key_id", _ascii(16), nullable=True))
        batch.add_column(sa.Column("alias_spiffe_id", _ascii(2048), nullable=True))
    update = sa.text("UPDATE join_tokens SET token_hash = :digest, key_id = :key_id WHERE id = :id")
    for row_id, token in rows:
        assert hasher is not None
        values = {"digest": hasher.digest(token), "key_id": hasher.key_id, "id": row_id}
        op.get_bind().execute(update, values)
    with op.batch_alter_table("join_tokens") as batch:
        batch.drop_column("token")
        batch.alter_column("token_hash", existing_type=_ascii(64), nullable=False)
        batch.alter_column("key_id", existing_type=_ascii(16), nullable=False)
        batch.create_unique_constraint("join_tokens_token_hash_key", ["token_hash"])


def downgrade() -> None:
    # The digests cannot give the tokens back: outstanding tokens are dropped.
    op.execute(sa.text("DELETE FROM join_tokens"))
    with op.batch_alter_table("join_tokens") as batch:
        batch.drop_constraint("join_tokens_token_hash_key", type_="unique")
        batch.drop_column("alias_spiffe_id")
        batch.drop_column("key_id")
        batch.drop_column("token_hash")
        batch.add_column(sa.Column("token", _ascii(255), nullable=False, unique=True))
