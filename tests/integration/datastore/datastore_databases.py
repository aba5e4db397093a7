"""Scratch databases for the datastore suite: created per use, uniquely named per xdist worker.

PostgreSQL and MariaDB are part of the test machine. One that cannot be reached skips its tests
on a developer machine, but fails them when ``CI`` is set (``CI=true``, as CI services and
``.ci/run`` set it), so a green CI run always covers all three databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError

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


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unreachable(kind: str, exc: Exception) -> NoReturn:
    """Skip (developer machine) or fail (CI) the test that needs the ``kind`` server."""
    message = f"{kind} server not reachable: {type(exc).__name__}: {str(exc)[:200]}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: every database must be tested)", pytrace=False)
    pytest.skip(message)


def admin_engine(kind: str, url: str) -> Engine:
    """An AUTOCOMMIT engine on the server's admin database, checked to answer."""
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError) as exc:  # not reachable, or refusing us
        eng.dispose()
        unreachable(kind, exc)
    return eng


def create_database(kind: str, tmp: Path) -> tuple[SqlConfig, str]:
    """A new empty database; returns its config and its name (for drop_database)."""
    name = unique_db_name()
    if kind == "sqlite3":
        return SqlConfig(connection_string=str(tmp / f"{name}.sqlite3")), name
    eng = admin_engine(kind, PG_ADMIN if kind == "postgres" else MYSQL_ADMIN)
    try:
        with eng.connect() as conn:
            if kind == "postgres":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
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
