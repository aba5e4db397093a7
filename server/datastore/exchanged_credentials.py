"""The DataStore's record of credentials already exchanged for SVIDs (the agentless token
exchange): one row per credential digest until the credential expires. The unique digest makes
"record" atomic: of two servers racing with the same credential, one insert fails."""

from __future__ import annotations

import string

from sqlalchemy import delete, insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from plastron.errors import InvalidArgument
from plastron.server.datastore.schema import exchanged_credentials
from plastron.server.datastore.transactions import TransactionRunner

T = exchanged_credentials
_HEX = frozenset(string.hexdigits.lower())


def _check(digest: str, expires_at: int) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise InvalidArgument("exchanged credential digest must be 64 lower-case hex digits")
    if not 0 <= expires_at <= 2**62:
        raise InvalidArgument(f"exchanged credential expiry {expires_at} is out of range")


class ExchangedCredentialMethods:
    _tx: TransactionRunner

    async def record_exchanged_credential(self, digest: str, expires_at: int) -> bool:
        _check(digest, expires_at)

        def work(conn: Connection) -> bool:
            try:
                with conn.begin_nested():
                    conn.execute(insert(T).values(digest=digest, expiry=expires_at))
            except IntegrityError:
                return False
            return True

        recorded: bool = await self._tx.write("record_exchanged_credential", work)
        return recorded

    async def prune_exchanged_credentials(self, expires_before: int) -> int:
        def work(conn: Connection) -> int:
            return int(conn.execute(delete(T).where(T.c.expiry < expires_before)).rowcount)

        pruned: int = await self._tx.write("prune_exchanged_credentials", work)
        return pruned
