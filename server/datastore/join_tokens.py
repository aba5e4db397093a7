"""Join tokens: single-use bearer secrets for the join_token node attestor.

Rows hold a keyed digest of each token (token_key.py), so the table gives no usable token;
lookups digest the presented token under this server's key.
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from plastron.errors import InvalidArgument
from plastron.records import JoinToken, RegistrationEntry
from plastron.selector import Selector
from plastron.server.datastore.schema import MAX_SHORT, join_tokens
from plastron.server.datastore.token_key import JoinTokenHasher
from plastron.spiffe.ids import SpiffeId, agent_id

T = join_tokens


def check_token(token: str) -> None:
    # Messages never echo the token: it is a secret.
    if not token or len(token) > MAX_SHORT:
        raise InvalidArgument(f"join token must be 1..{MAX_SHORT} characters")
    if not token.isascii() or not token.isprintable():
        raise InvalidArgument("join token must be printable ASCII")


def create(conn: Connection, hasher: JoinTokenHasher, token: JoinToken) -> None:
    check_token(token.token)
    if not 0 <= token.expires_at <= 2**62:
        raise InvalidArgument(f"join token expires_at {token.expires_at} is out of range")
    conn.execute(
        insert(T).values(
            token_hash=hasher.digest(token.token),
            key_id=hasher.key_id,
            expiry=token.expires_at,
            alias_spiffe_id=None if token.alias is None else str(token.alias),
        )
    )


def fetch(conn: Connection, hasher: JoinTokenHasher, token: str) -> JoinToken | None:
    check_token(token)
    digest = hasher.digest(token)
    row = conn.execute(
        select(T.c.expiry, T.c.alias_spiffe_id).where(T.c.token_hash == digest)
    ).first()
    if row is None:
        return None
    alias = None if row[1] is None else SpiffeId.parse(str(row[1]))
    return JoinToken(token, int(row[0]), alias)


def alias_entry(token: JoinToken) -> RegistrationEntry | None:
    """The node alias entry a used token leaves behind, as SPIRE's CreateJoinToken makes it:
    parent = the token's agent ID, selector ``spiffe_id:<agent ID>``."""
    if token.alias is None:
        return None
    parent = agent_id(token.alias.trust_domain, "join_token", token.token)
    return RegistrationEntry(
        entry_id="",
        spiffe_id=token.alias,
        parent_id=parent,
        selectors=(Selector("spiffe_id", str(parent)),),
    )


def consume(conn: Connection, hasher: JoinTokenHasher, token: str) -> JoinToken | None:
    """Delete and return the token; of concurrent consumers only the one whose DELETE hit wins."""
    found = fetch(conn, hasher, token)
    if found is None:
        return None
    result = conn.execute(delete(T).where(T.c.token_hash == hasher.digest(token)))
    return found if result.rowcount == 1 else None


def foreign_key_ids(conn: Connection, hasher: JoinTokenHasher) -> dict[str, int]:
    """How many live rows were stored under each key other than ``hasher``'s (none when every
    server sharing the datastore has the same key)."""
    rows = conn.execute(
        select(T.c.key_id, func.count())
        .where(T.c.key_id != hasher.key_id)
        .group_by(T.c.key_id)
        .limit(10)
    ).all()
    return {str(key_id): int(count) for key_id, count in rows}


def prune(conn: Connection, expires_before: int) -> int:
    return int(conn.execute(delete(T).where(T.c.expiry < expires_before)).rowcount)
