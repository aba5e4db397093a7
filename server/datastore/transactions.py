"""Runs blocking SQLAlchemy transactions on a bounded thread pool and maps driver errors.

Every public datastore call is one transaction here: committed when the work returns,
rolled back when it raises, so nothing is ever half-written. Driver errors become
DataStoreError naming the operation; their text is stripped of SQL parameters and of the
connection password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from plastron.errors import DataStoreError, PlastronError
from plastron.server.datastore.engine import WRITE_OPTION
from plastron.server.metrics import DATASTORE_QUERY

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
_PG_RETRY_STATES = {"40001", "40P01"}  # serialization failure, deadlock detected
_MYSQL_RETRY_CODES = {1213, 1205}  # deadlock, lock wait timeout


def is_retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_RETRY_CODES


def describe(exc: BaseException, secret: str | None) -> str:
    """The driver's own message (never the SQL or its parameters), password removed."""
    if isinstance(exc, IntegrityError):
        # Constraint messages quote the offending values (tokens, for one): keep them out.
        return "constraint violation"
    if isinstance(exc, DBAPIError):
        text = f"{type(exc.orig).__name__}: {exc.orig}"
    else:
        text = type(exc).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if secret:
        text = text.replace(secret, "<redacted>")
    return text[:300]


class TransactionRunner:
    def __init__(self, engine: Engine, max_workers: int, secret: str | None) -> None:
        self.engine = engine
        self._secret = secret
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="plastron-datastore")
        self._closed = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def read(self, op: str, work: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """Run ``work`` in a read transaction; ``snapshot`` keeps several SELECTs consistent."""
        return await self._timed(op, "read", partial(self._run, op, work, False, snapshot, False))

    async def write(
        self, op: str, work: Callable[[Connection], T], *, retry_conflict: bool = False
    ) -> T:
        """Run ``work`` in a write transaction, retrying deadlocks (and, for upserts, the unique
        violation of a concurrent first insert, after which the row exists and is locked)."""
        return await self._timed(
            op, "write", partial(self._run, op, work, True, False, retry_conflict)
        )

    async def _timed(self, op: str, kind: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._submit(call)
            outcome = "success"
            return result
        finally:
            DATASTORE_QUERY.labels(op, kind, outcome).observe(time.perf_counter() - started)

    async def _submit(self, call: Callable[[], T]) -> T:
        if self._closed:
            raise DataStoreError("datastore: closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    def _run(
        self, op: str, work: Callable[[Connection], T], write: bool, snapshot: bool, retry: bool
    ) -> T:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._once(work, write, snapshot)
            except PlastronError:
                raise
            except IntegrityError as exc:
                if retry and attempt < MAX_ATTEMPTS:
                    continue
                raise DataStoreError(
                    f"datastore: {op} failed: {describe(exc, self._secret)}"
                ) from None
            except DBAPIError as exc:
                if is_retryable(exc) and attempt < MAX_ATTEMPTS:
                    log.info("datastore retry op=%s attempt=%d", op, attempt)
                    continue
                raise DataStoreError(
                    f"datastore: {op} failed: {describe(exc, self._secret)}"
                ) from None
            except SQLAlchemyError as exc:
                raise DataStoreError(
                    f"datastore: {op} failed: {describe(exc, self._secret)}"
                ) from None
        raise DataStoreError(f"datastore: {op} failed after {MAX_ATTEMPTS} attempts")

    def _once(self, work: Callable[[Connection], T], write: bool, snapshot: bool) -> T:
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            elif snapshot and self.dialect != "sqlite":
                # SQLite read transactions are snapshots already; PG/MySQL need asking.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return work(conn)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        self.engine.dispose()
