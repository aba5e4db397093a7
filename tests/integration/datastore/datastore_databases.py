"""Scratch databases for the datastore suite: created per use, uniquely named per xdist worker."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from plastron.server.datastore.config import SqlConfig

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MYSQL_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
BACKENDS = [
    pytest.param("sqlite3", id="sqlite3"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


def unique_db_name() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"plastron_t_{worker}_{uuid.uuid4().hex[:12]}"


def create_database(kind: str, tmp: Path) -> tuple[SqlConfig, str]:
    """A new empty database; returns its config and its name (for drop_database)."""
    name = unique_db_name()
    if kind == "sqlite3":
        return SqlConfig(connection_string=str(tmp / f"{name}.sqlite3")), name
    admin_url = PG_ADMIN if kind == "postgres" else MYSQL_ADMIN
    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            if kind == "postgres":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:  # the server is part of the test machine; say so plainly
        pytest.skip(f"{kind} server not reachable: {type(exc).__name__}")
    finally:
        eng.dispose()
    if kind == "postgres":
        cs = f"dbname={name} user=postgres host=127.0.0.1 port=5432"
    else:
        cs = f"root:@tcp(127.0.0.1:3306)/{name}?parseTime=true"
    return SqlConfig(database_type=kind, connection_string=cs, max_open_conns=8), name  # type: ignore[arg-type]


def drop_database(kind: str, name: str) -> None:
    if kind == "sqlite3":
        return
    eng = create_engine(
        PG_ADMIN if kind == "postgres" else MYSQL_ADMIN, isolation_level="AUTOCOMMIT"
    )
    with eng.connect() as conn:
        if kind == "postgres":
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    eng.dispose()
