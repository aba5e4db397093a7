"""DataStore "sql" configuration and SPIRE-style connection strings → SQLAlchemy URLs.

SPIRE users carry their ``connection_string`` over unchanged: a file path for sqlite3, a libpq
DSN or ``postgres://`` URL for postgres, a go-sql-driver DSN or ``mysql://`` URL for mysql.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy.engine import URL

from plastron.errors import ConfigError

DatabaseType = Literal["sqlite3", "postgres", "mysql"]
DEFAULT_DATABASE_TYPE: DatabaseType = "sqlite3"
DEFAULT_SQLITE_FILE = "datastore.sqlite3"


#: MySQL's TLS files, given to the driver apart from the connection string (as SPIRE does).
_MYSQL_TLS_KEYS = ("root_ca_path", "client_cert_path", "client_key_path")


@dataclass(frozen=True)
class SqlConfig:
    database_type: DatabaseType = DEFAULT_DATABASE_TYPE
    connection_string: str = ""
    data_dir: str = ""  # where the default SQLite file lives when connection_string is empty
    max_open_conns: int = 100
    max_idle_conns: int = 100
    conn_max_lifetime: int = 0  # seconds; 0 = unlimited
    disable_migration: bool = False
    busy_timeout_ms: int = 30_000  # SQLite only
    max_workers: int = 8  # threads running blocking DB calls
    root_ca_path: str = ""  # mysql TLS
    client_cert_path: str = ""
    client_key_path: str = ""

    def __repr__(self) -> str:
        # connection_string may carry a password.
        return f"SqlConfig(database_type={self.database_type!r}, connection_string=<redacted>)"

    def validate(self) -> None:
        if self.database_type not in ("sqlite3", "postgres", "mysql"):
            raise ConfigError(
                f"database_type {self.database_type!r} is not one of sqlite3, postgres, mysql"
            )
        if self.max_open_conns < 1:
            raise ConfigError(f"max_open_conns must be at least 1 (got {self.max_open_conns})")
        if self.max_idle_conns < 0:
            raise ConfigError(f"max_idle_conns must not be negative (got {self.max_idle_conns})")
        if self.conn_max_lifetime < 0:
            raise ConfigError(f"conn_max_lifetime must not be negative ({self.conn_max_lifetime})")
        if not 1 <= self.max_workers <= 256:
            raise ConfigError(f"max_workers must be within 1..256 (got {self.max_workers})")
        tls_files = [k for k in _MYSQL_TLS_KEYS if getattr(self, k)]
        if tls_files and self.database_type != "mysql":
            # SPIRE reads these for MySQL only; taking them and not using them would leave the
            # operator believing the connection verifies a CA it never loads
            hint = (
                " (PostgreSQL: sslrootcert, sslcert and sslkey in connection_string)"
                if self.database_type == "postgres"
                else ""
            )
            raise ConfigError(
                f'{tls_files[0]} is for database_type "mysql" only, not'
                f" {self.database_type!r}{hint}"
            )


@dataclass(frozen=True)
class DriverTarget:
    """What SQLAlchemy needs to connect: the URL and driver keyword arguments."""

    url: URL
    connect_args: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"DriverTarget(url={self.url.render_as_string(hide_password=True)!r})"


def to_driver_target(config: SqlConfig) -> DriverTarget:
    """Convert the configured SPIRE-style connection string for SQLAlchemy."""
    config.validate()
    if config.database_type == "sqlite3":
        return DriverTarget(_sqlite_url(config.connection_string, config.data_dir))
    if config.database_type == "postgres":
        return DriverTarget(_postgres_url(config.connection_string))
    url, connect_args = _mysql_url(config.connection_string)
    if config.root_ca_path:
        connect_args["ssl_ca"] = config.root_ca_path
        connect_args.setdefault("ssl_verify_cert", True)
    if config.client_cert_path or config.client_key_path:
        if not (config.client_cert_path and config.client_key_path):
            raise ConfigError("client_cert_path and client_key_path must be set together")
        connect_args["ssl_cert"] = config.client_cert_path
        connect_args["ssl_key"] = config.client_key_path
    return DriverTarget(url, connect_args)


def _sqlite_url(conn: str, data_dir: str) -> URL:
    if not conn:
        if not data_dir:
            raise ConfigError("connection_string is empty and no data_dir is set for sqlite3")
        conn = os.path.join(data_dir, DEFAULT_SQLITE_FILE)
    if conn == ":memory:" or "mode=memory" in conn:
        # Each pooled connection would see a different empty database.
        raise ConfigError("connection_string: in-memory sqlite3 is not supported; use a file")
    if conn.startswith("file:"):
        path, _, query = conn[len("file:") :].partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params["uri"] = "true"
        return URL.create("sqlite+pysqlite", database=f"file:{path}", query=params)
    return URL.create("sqlite+pysqlite", database=os.path.abspath(conn))


# ---- postgres --------------------------------------------------------------------------------

_PG_URL_KEYS = {"host", "port", "user", "password", "dbname"}


def _postgres_url(conn: str) -> URL:
    if not conn.strip():
        raise ConfigError("connection_string is empty for database_type postgres")
    if re.match(r"^postgres(ql)?://", conn):
        return _postgres_from_url(conn)
    if "://" in conn:
        raise ConfigError("connection_string: postgres URLs must use postgres:// or postgresql://")
    return _postgres_from_dsn(conn)


def _url_from_parts(driver: str, conn: str, kind: str) -> tuple[URL, dict[str, str]]:
    """A driver URL from a ``scheme://user:pass@host:port/db?query`` string, and its query
    parameters (for the caller to sort)."""
    parts = urlsplit(conn)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"connection_string: {kind} URL has an invalid port") from None
    url = URL.create(
        driver,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=parts.hostname or None,
        port=port,
        database=unquote(parts.path.lstrip("/")) or None,
    )
    return url, dict(parse_qsl(parts.query, keep_blank_values=True))


def _postgres_from_url(conn: str) -> URL:
    url, query = _url_from_parts("postgresql+psycopg", conn, "postgres")
    return url.update_query_dict(query)


def _postgres_from_dsn(conn: str) -> URL:
    """A libpq keyword/value DSN: ``dbname=x user=postgres host=127.0.0.1 password='a b'``."""
    try:
        words = shlex.split(conn, posix=True)
    except ValueError:
        raise ConfigError("connection_string: postgres DSN has unbalanced quotes") from None
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ConfigError(
                "connection_string: postgres DSN items must be key=value "
                f"(offending key {key.split('=')[0][:40]!r})"
            )
        values[key] = value
    port: int | None = None
    if "port" in values:
        if not values["port"].isdigit():
            raise ConfigError("connection_string: postgres DSN port is not a number")
        port = int(values["port"])
    host = values.get("host")
    query = {k: v for k, v in values.items() if k not in _PG_URL_KEYS}
    if host and host.startswith("/"):  # a Unix socket directory goes in the query
        query["host"] = host
        host = None
    return URL.create(
        "postgresql+psycopg",
        username=values.get("user"),
        password=values.get("password"),
        host=host or None,
        port=port,
        database=values.get("dbname"),
        query=query,
    )


# ---- mysql -----------------------------------------------------------------------------------

# go-sql-driver parameters that have no PyMySQL meaning (time parsing, Go-side buffering).
_GO_ONLY_PARAMS = {
    "parseTime",
    "loc",
    "allowNativePasswords",
    "allowCleartextPasswords",
    "multiStatements",
    "interpolateParams",
    "clientFoundRows",
    "columnsWithAlias",
    "maxAllowedPacket",
    "rejectReadOnly",
    "checkConnLiveness",
    "collation",
}
_GO_NET = re.compile(r"^(?P<net>[a-z0-9]*)(?:\((?P<addr>[^)]*)\))?$")


def _mysql_url(conn: str) -> tuple[URL, dict[str, Any]]:
    if not conn.strip():
        raise ConfigError("connection_string is empty for database_type mysql")
    if re.match(r"^mysql://", conn):
        url, params = _url_from_parts("mysql+pymysql", conn, "mysql")
        query, connect_args = _mysql_params(params)
        return url.update_query_dict(query), connect_args
    return _mysql_from_go_dsn(conn)


def _mysql_from_go_dsn(conn: str) -> tuple[URL, dict[str, Any]]:
    # Parsed as go-sql-driver does: the last '/' starts the database name, and the last '@'
    # before it ends the credentials (so a password may contain '@' or ':').
    head, slash, tail = conn.rpartition("/")
    creds, _, netpart = head.rpartition("@")
    m = _GO_NET.match(netpart)
    if not slash or m is None:
        raise ConfigError(
            "connection_string: not a go-sql-driver DSN "
            "([user[:password]@][net[(addr)]]/dbname[?params]) nor a mysql:// URL"
        )
    database, _, param_text = tail.partition("?")
    user, _, password = creds.partition(":")
    net, addr = m.group("net") or "tcp", m.group("addr") or ""
    host: str | None = None
    port: int | None = None
    query, connect_args = _mysql_params(dict(parse_qsl(param_text, keep_blank_values=True)))
    if net == "tcp":
        host, _, port_text = addr.rpartition(":") if ":" in addr else (addr, "", "")
        host = host.strip("[]") or "127.0.0.1"
        if port_text:
            if not port_text.isdigit():
                raise ConfigError("connection_string: mysql DSN port is not a number")
            port = int(port_text)
    elif net == "unix":
        query["unix_socket"] = addr
    else:
        raise ConfigError(f"connection_string: mysql DSN network {net!r} is not tcp or unix")
    return URL.create(
        "mysql+pymysql",
        username=user or None,
        password=password or None,
        host=host,
        port=port,
        database=database or None,
        query=query,
    ), connect_args


def _mysql_params(params: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    query: dict[str, str] = {"charset": "utf8mb4"}
    connect_args: dict[str, Any] = {}
    for key, value in params.items():
        if key in _GO_ONLY_PARAMS:
            continue
        if key == "charset":
            query["charset"] = value.split(",")[0]
        elif key == "timeout":
            connect_args["connect_timeout"] = _go_seconds(value, key)
        elif key in ("readTimeout", "writeTimeout"):
            connect_args["read_timeout" if key == "readTimeout" else "write_timeout"] = _go_seconds(
                value, key
            )
        elif key == "tls":
            connect_args.update(_mysql_tls(value))
        else:
            raise ConfigError(f"connection_string: mysql parameter {key!r} is not supported")
    return query, connect_args


def _mysql_tls(value: str) -> dict[str, Any]:
    if value in ("false", ""):
        return {}
    if value in ("true", "preferred"):
        return {"ssl": {}, "ssl_verify_cert": True, "ssl_verify_identity": True}
    if value == "skip-verify":
        return {"ssl": {}, "ssl_verify_cert": False}
    raise ConfigError(
        f"connection_string: mysql tls={value!r} is not true, false, skip-verify or preferred; "
        "use root_ca_path/client_cert_path/client_key_path for custom TLS"
    )


def _go_seconds(value: str, key: str) -> int:
    """Go durations such as ``5s``, ``1m30s``, ``500ms`` → whole seconds (at least 1)."""
    total = 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    pos = 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise ConfigError(f"connection_string: mysql {key}={value!r} is not a Go duration")
    return max(1, int(total))
