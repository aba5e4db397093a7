"""The DataStore's join-token methods: tokens stored as keyed digests (token_key.py),
consumed with one atomic DELETE, and a clear log line when a shared datastore holds tokens
stored under another server's key.

A token's node alias entry is made only when the token is used: its parent ID is the token's
agent ID, which contains the token, so an entry made earlier (as SPIRE does) would put the live
token in plain text in the entry tables."""

from __future__ import annotations

import logging
import time

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from plastron.clock import Clock, to_unix
from plastron.errors import AlreadyExists, FailedPrecondition
from plastron.records import JoinToken
from plastron.server.datastore import entries
from plastron.server.datastore import join_tokens as tokens
from plastron.server.datastore.token_key import KEY_FILE_NAME, JoinTokenHasher
from plastron.server.datastore.transactions import TransactionRunner

log = logging.getLogger(__name__)

FOREIGN_KEY_LOG_SECONDS = 60.0


class JoinTokenMethods:
    _tx: TransactionRunner
    _clock: Clock
    _token_hasher: JoinTokenHasher | None
    _foreign_keys_logged_at: float

    def _hasher(self) -> JoinTokenHasher:
        if self._token_hasher is None:
            raise FailedPrecondition("datastore: opened without the join-token key")
        return self._token_hasher

    async def create_join_token(self, token: JoinToken) -> None:
        hasher = self._hasher()

        def work(conn: Connection) -> None:
            try:
                with conn.begin_nested():
                    tokens.create(conn, hasher, token)
            except IntegrityError:
                raise AlreadyExists("join token already exists") from None

        await self._tx.write("create_join_token", work)

    async def fetch_join_token(self, token: str) -> JoinToken | None:
        hasher = self._hasher()
        return await self._tx.read("fetch_join_token", lambda c: tokens.fetch(c, hasher, token))

    async def consume_join_token(self, token: str) -> JoinToken | None:
        """Use the token up; in the same transaction, make its node alias entry (if any)."""
        hasher = self._hasher()
        now = to_unix(self._clock.now())

        def work(conn: Connection) -> JoinToken | None:
            found = tokens.consume(conn, hasher, token)
            alias = None if found is None else tokens.alias_entry(found)
            if alias is not None:
                try:
                    with conn.begin_nested():
                        entries.insert_entry(conn, entries.prepare_new(alias, now), now)
                except IntegrityError:
                    pass  # the same alias entry exists already: nothing to add
            return found

        found = await self._tx.write("consume_join_token", work)
        if found is None:
            await self._report_foreign_token_keys(hasher)
        return found

    async def _report_foreign_token_keys(self, hasher: JoinTokenHasher) -> None:
        """After a miss: say so (at most once a minute) if tokens were stored under another
        server's key, the one way a valid token is never found on a shared datastore."""
        if time.monotonic() - self._foreign_keys_logged_at < FOREIGN_KEY_LOG_SECONDS:
            return
        foreign = await self._tx.read(
            "join_token_key_ids", lambda c: tokens.foreign_key_ids(c, hasher)
        )
        if foreign:
            self._foreign_keys_logged_at = time.monotonic()
            log.warning(
                "join tokens in the datastore were stored under other join-token keys, so this "
                "server cannot find them; servers sharing a datastore need the same "
                "<data_dir>/%s key_id=%s other_key_ids=%s",
                KEY_FILE_NAME,
                hasher.key_id,
                ",".join(f"{k}({n})" for k, n in sorted(foreign.items())),
            )

    async def prune_join_tokens(self, expires_before: int) -> int:
        return await self._tx.write("prune_join_tokens", lambda c: tokens.prune(c, expires_before))
