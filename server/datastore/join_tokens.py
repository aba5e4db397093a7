"""Join tokens: single-use bearer secrets for the join_token node attestor."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from plastron.errors import InvalidArgument
from plastron.server.datastore.records import JoinToken
from plastron.server.datastore.schema import MAX_SHORT, join_tokens

T = join_tokens


def check_token(token: str) -> None:
    # Messages never echo the token: it is a secret.
    if not token or len(token) > MAX_SHORT:
        raise InvalidArgument(f"join token must be 1..{MAX_SHORT} characters")
    if not token.isascii() or not token.isprintable():
        raise InvalidArgument("join token must be printable ASCII")


def create(conn: Connection, token: JoinToken) -> None:
    check_token(token.token)
    if not 0 <= token.expires_at <= 2**62:
        raise InvalidArgument(f"join token expires_at {token.expires_at} is out of range")
    conn.execute(insert(T).values(token=token.token, expiry=token.expires_at))


def fetch(conn: Connection, token: str) -> JoinToken | None:
    check_token(token)
    row = conn.execute(select(T.c.token, T.c.expiry).where(T.c.token == token)).first()
    return None if row is None else JoinToken(str(row[0]), int(row[1]))


def consume(conn: Connection, token: str) -> JoinToken | None:
    """Delete and return the token; of concurrent consumers only the one whose DELETE hit wins."""
    found = fetch(conn, token)
    if found is None:
        return None
    result = conn.execute(delete(T).where(T.c.token == token))
    return found if result.rowcount == 1 else None


def prune(conn: Connection, expires_before: int) -> int:
    return int(conn.execute(delete(T).where(T.c.expiry < expires_before)).rowcount)
