"""SQLAlchemy engine construction per database type (pool sizes, SQLite pragmas, isolation)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.pool import ConnectionPoolEntry

from plastron.server.datastore.config import SqlConfig, to_driver_target

# Execution option set on connections that will write: on SQLite they start with
# BEGIN IMMEDIATE, taking the write lock up front, so read→write upgrades never dead-end in
# SQLITE_BUSY and read-modify-write sequences (update_bundle) are serialised.
WRITE_OPTION = "plastron_write"


def build_engine(config: SqlConfig) -> Engine:
    target = to_driver_target(config)
    kwargs: dict[str, Any] = {"connect_args": dict(target.connect_args)}
    if config.database_type == "sqlite3":
        kwargs["connect_args"]["check_same_thread"] = False
        kwargs["connect_args"]["timeout"] = config.busy_timeout_ms / 1000
        kwargs["pool_size"] = max(1, min(config.max_idle_conns, config.max_open_conns))
        kwargs["max_overflow"] = max(0, config.max_open_conns - kwargs["pool_size"])
    else:
        idle = max(1, min(config.max_idle_conns, config.max_open_conns))
        kwargs["pool_size"] = idle
        kwargs["max_overflow"] = config.max_open_conns - idle
        kwargs["pool_pre_ping"] = True
        # READ COMMITTED on MySQL too (PostgreSQL's default): a conflicting unique insert then
        # sees the winning row, and gap locks do not turn upserts into deadlocks.
        kwargs["isolation_level"] = "READ COMMITTED"
    if config.conn_max_lifetime > 0:
        kwargs["pool_recycle"] = config.conn_max_lifetime
    engine = create_engine(target.url, **kwargs)
    if config.database_type == "sqlite3":
        _install_sqlite_hooks(engine, config.busy_timeout_ms)
    return engine


def _install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows (consumed join tokens, replaced keys) are zeroed, not left readable
            # in free pages of the file.
            cur.execute("PRAGMA secure_delete=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
