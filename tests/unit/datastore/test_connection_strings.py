"""SPIRE-style connection strings → SQLAlchemy URLs."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plastron.errors import ConfigError, InvalidArgument
from plastron.server.datastore.config import SqlConfig, to_driver_target
from plastron.server.datastore.filters import next_token, parse_page


def url_of(kind: str, cs: str, **kw: object) -> str:
    target = to_driver_target(SqlConfig(database_type=kind, connection_string=cs, **kw))  # type: ignore[arg-type]
    return target.url.render_as_string(hide_password=False)


def test_sqlite_paths(tmp_path: os.PathLike[str]) -> None:
    assert url_of("sqlite3", "/var/lib/plastron/ds.sqlite3") == (
        "sqlite+pysqlite:////var/lib/plastron/ds.sqlite3"
    )
    rel = url_of("sqlite3", "./data/datastore.sqlite3")
    assert rel == f"sqlite+pysqlite:///{os.path.abspath('data/datastore.sqlite3')}"
    assert url_of("sqlite3", "", data_dir="/srv/d") == "sqlite+pysqlite:////srv/d/datastore.sqlite3"
    uri = to_driver_target(SqlConfig(connection_string="file:/x/y.db?cache=shared")).url
    assert uri.database == "file:/x/y.db"
    assert dict(uri.query) == {"cache": "shared", "uri": "true"}
    with pytest.raises(ConfigError, match="data_dir"):
        url_of("sqlite3", "")
    with pytest.raises(ConfigError, match="in-memory"):
        url_of("sqlite3", ":memory:")


@pytest.mark.parametrize(
    ("cs", "expected"),
    [
        (
            "dbname=plastron user=postgres host=127.0.0.1",
            "postgresql+psycopg://postgres@127.0.0.1/plastron",
        ),
        (
            "dbname=x user=u host=/var/run/postgresql",
            "postgresql+psycopg://u@/x?host=%2Fvar%2Frun%2Fpostgresql",
        ),
        (
            "postgres://u:p%40ss@h:5433/db?sslmode=disable",
            "postgresql+psycopg://u:p%40ss@h:5433/db?sslmode=disable",
        ),
        ("postgresql://h/db", "postgresql+psycopg://h/db"),
    ],
)
def test_postgres(cs: str, expected: str) -> None:
    assert url_of("postgres", cs) == expected


def test_postgres_dsn_quoting_and_extra_keys() -> None:
    cs = "host=db.internal port=6432 dbname=x user=u password='p w@:/' sslmode=verify-full"
    url = to_driver_target(SqlConfig(database_type="postgres", connection_string=cs)).url
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "u",
        "p w@:/",
        "db.internal",
        6432,
        "x",
    )
    assert dict(url.query) == {"sslmode": "verify-full"}


@pytest.mark.parametrize(
    "cs",
    ["", "dbname", "dbname=x port=abc", "dbname='x", "mysql://h/db", "postgres://h:99999/db"],
)
def test_postgres_rejects(cs: str) -> None:
    with pytest.raises(ConfigError):
        url_of("postgres", cs)


@pytest.mark.parametrize(
    ("cs", "expected", "connect_args"),
    [
        (
            "root:@tcp(127.0.0.1:3306)/plastron?parseTime=true",
            "mysql+pymysql://root@127.0.0.1:3306/plastron?charset=utf8mb4",
            {},
        ),
        (
            "spire:p@ss:w@tcp([::1]:3307)/db?charset=utf8&timeout=1m30s",
            "mysql+pymysql://spire:p%40ss%3Aw@[::1]:3307/db?charset=utf8",
            {"connect_timeout": 90},
        ),
        (
            "u@unix(/run/mysqld/mysqld.sock)/db",
            "mysql+pymysql://u@/db?charset=utf8mb4&unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
            {},
        ),
        ("/db", "mysql+pymysql://127.0.0.1/db?charset=utf8mb4", {}),
        (
            "mysql://u:pw@h:3306/db?tls=true",
            "mysql+pymysql://u:pw@h:3306/db?charset=utf8mb4",
            {"ssl": {}, "ssl_verify_cert": True, "ssl_verify_identity": True},
        ),
    ],
)
def test_mysql(cs: str, expected: str, connect_args: dict[str, object]) -> None:
    target = to_driver_target(SqlConfig(database_type="mysql", connection_string=cs))
    rendered = target.url.render_as_string(hide_password=False)
    assert rendered.replace("[::1]", "::1") == expected.replace("[::1]", "::1")
    assert target.connect_args == connect_args


@pytest.mark.parametrize(
    "cs",
    [
        "",
        "root@tcp(h:3306)",  # no /dbname
        "root@tcp(h:x)/db",
        "root@udp(h:1)/db",
        "root@tcp(h:1)/db?bogus=1",
        "root@tcp(h:1)/db?tls=custom",
        "root@tcp(h:1)/db?timeout=soon",
    ],
)
def test_mysql_rejects(cs: str) -> None:
    with pytest.raises(ConfigError):
        url_of("mysql", cs)


def test_mysql_tls_files() -> None:
    target = to_driver_target(
        SqlConfig(
            database_type="mysql",
            connection_string="u@tcp(h:1)/db",
            root_ca_path="/ca.pem",
            client_cert_path="/c.pem",
            client_key_path="/k.pem",
        )
    )
    assert target.connect_args == {
        "ssl_ca": "/ca.pem",
        "ssl_verify_cert": True,
        "ssl_cert": "/c.pem",
        "ssl_key": "/k.pem",
    }
    with pytest.raises(ConfigError, match="together"):
        to_driver_target(
            SqlConfig(database_type="mysql", connection_string="u@/db", client_cert_path="/c")
        )


def test_config_validation_and_redaction() -> None:
    with pytest.raises(ConfigError, match="database_type"):
        to_driver_target(SqlConfig(database_type="oracle", connection_string="x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_open_conns"):
        to_driver_target(SqlConfig(connection_string="/x", max_open_conns=0))
    config = SqlConfig(database_type="mysql", connection_string="root:hunter2@tcp(h:1)/db")
    target = to_driver_target(config)
    assert "hunter2" not in repr(config) and "hunter2" not in repr(target)


@given(st.text(max_size=80))
def test_converters_raise_only_config_errors(cs: str) -> None:
    for kind in ("postgres", "mysql"):
        with contextlib.suppress(ConfigError):
            url_of(kind, cs)


def test_page_tokens() -> None:
    assert parse_page(0, "") == (None, 0)
    assert parse_page(10, "42") == (10, 42)
    assert next_token(2, [5, 9]) == "9"
    assert next_token(3, [5, 9]) == ""
    assert next_token(None, [5, 9]) == ""
    for bad_size in (-1, 10_001):
        with pytest.raises(InvalidArgument, match="page_size"):
            parse_page(bad_size, "")
    for bad_token in ("x", "-1", "1" * 21, "١٢"):
        with pytest.raises(InvalidArgument, match="page_token"):
            parse_page(1, bad_token)


@pytest.mark.parametrize("database_type", ["postgres", "sqlite3"])
@pytest.mark.parametrize("key", ["root_ca_path", "client_cert_path", "client_key_path"])
def test_mysql_tls_files_are_refused_for_other_databases(database_type: str, key: str) -> None:
    config = SqlConfig(database_type=database_type, connection_string="dbname=x", **{key: "/a.pem"})
    with pytest.raises(ConfigError, match=f'^{key} is for database_type "mysql" only, not '):
        config.validate()
