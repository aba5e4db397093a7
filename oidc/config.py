"""``plastron-oidc-discovery -config FILE``: SPIRE's oidc-discovery-provider HCL keys.

A SPIRE provider config works unchanged, with two refusals, each one clear line: ``acme``
(certificates come from ``serving_cert_file`` or a TLS proxy in front) and the Windows-only
``experimental`` named pipes. Unknown keys are refused, as everywhere in Plastron.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from plastron.configs.block import Block
from plastron.configs.document import parse_document, read_config_file
from plastron.configs.sections import LOG_LEVELS, PORT_RANGE
from plastron.errors import ConfigError, InvalidArgument
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.oidc import DomainAllowList

DEFAULT_POLL_INTERVAL = dt.timedelta(seconds=10)
DEFAULT_FILE_SYNC_INTERVAL = dt.timedelta(minutes=1)
DEFAULT_SERVING_ADDR = ":443"
DEFAULT_HEALTH_PORT = 8008
# SPIRE: ready/live stay true this long after the last good fetch (5 polls, at least 3 min).
MIN_HEALTH_THRESHOLD = dt.timedelta(minutes=3)
LISTENER_KEYS = ("acme", "serving_cert_file", "listen_socket_path", "insecure_addr")


@dataclass(frozen=True)
class ServerApiSource:
    socket_path: Path
    poll_interval: dt.timedelta


@dataclass(frozen=True)
class WorkloadApiSource:
    socket_path: Path
    trust_domain: TrustDomain
    poll_interval: dt.timedelta


@dataclass(frozen=True)
class ServingCert:
    cert_file_path: Path
    key_file_path: Path
    file_sync_interval: dt.timedelta
    host: str
    port: int


@dataclass(frozen=True)
class HealthChecks:
    bind_port: int = DEFAULT_HEALTH_PORT
    ready_path: str = "/ready"
    live_path: str = "/live"


@dataclass(frozen=True)
class OidcConfig:
    domains: DomainAllowList
    source: ServerApiSource | WorkloadApiSource
    serving_cert: ServingCert | None = None
    listen_socket_path: Path | None = None
    insecure_addr: tuple[str, int] | None = None
    allow_insecure_scheme: bool = False
    jwt_issuer: str | None = None
    jwks_uri: str | None = None
    server_path_prefix: str = "/"
    log_level: str = "INFO"
    log_format: str = "text"
    log_path: str = ""
    log_requests: bool = False
    health_checks: HealthChecks | None = None

    @property
    def health_threshold(self) -> dt.timedelta:
        return max(self.source.poll_interval * 5, MIN_HEALTH_THRESHOLD)


def split_host_port(text: str, where: str) -> tuple[str, int]:
    """Go's ``host:port`` (``:8080`` binds every address, as ``net.Listen`` does)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not PORT_RANGE[0] <= int(port) <= PORT_RANGE[1]:
        raise ConfigError(f'{where} must be "host:port" ({text!r})')
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0", int(port)  # noqa: S104


def _refuse_experimental(block: Block, where: str) -> None:
    if block.has("experimental"):
        raise ConfigError(f"{where}.experimental (Windows named pipes) is not supported")


def _read_server_api(block: Block) -> ServerApiSource:
    _refuse_experimental(block, "server_api")
    address: str = block.string("address")
    if not address.startswith("unix:///"):
        raise ConfigError(
            f'server_api.address must be "unix:///<path of the server socket>" ({address!r})'
        )
    source = ServerApiSource(
        socket_path=Path(address.removeprefix("unix://")),
        poll_interval=block.duration("poll_interval", DEFAULT_POLL_INTERVAL),
    )
    block.finish()
    return source


def _read_workload_api(block: Block) -> WorkloadApiSource:
    _refuse_experimental(block, "workload_api")
    socket_path: str = block.string("socket_path")
    if not socket_path:
        raise ConfigError("workload_api.socket_path must be configured")
    source = WorkloadApiSource(
        socket_path=Path(socket_path.removeprefix("unix://")),
        trust_domain=block.trust_domain("trust_domain"),
        poll_interval=block.duration("poll_interval", DEFAULT_POLL_INTERVAL),
    )
    block.finish()
    return source


def _read_source(top: Block) -> ServerApiSource | WorkloadApiSource:
    if top.has("registration_api"):
        raise ConfigError(
            "registration_api was replaced by server_api in SPIRE; "
            'use server_api { address = "unix:///<server socket>" }'
        )
    has_server, has_workload = top.has("server_api"), top.has("workload_api")
    if has_server == has_workload:
        raise ConfigError(
            "exactly one of the server_api and workload_api sections must be configured"
        )
    if has_server:
        return _read_server_api(top.block("server_api"))
    return _read_workload_api(top.block("workload_api"))


def _read_serving_cert(block: Block) -> ServingCert:
    host, port = split_host_port(block.string("addr", DEFAULT_SERVING_ADDR), block.where("addr"))
    cert = ServingCert(
        cert_file_path=Path(block.string("cert_file_path")),
        key_file_path=Path(block.string("key_file_path")),
        file_sync_interval=block.duration("file_sync_interval", DEFAULT_FILE_SYNC_INTERVAL),
        host=host,
        port=port,
    )
    block.finish()
    return cert


def _read_health_checks(block: Block) -> HealthChecks:
    d = HealthChecks
    health = HealthChecks(
        bind_port=block.integer("bind_port", d.bind_port, *PORT_RANGE),
        ready_path=block.string("ready_path", d.ready_path),
        live_path=block.string("live_path", d.live_path),
    )
    block.finish()
    for key, value in (("ready_path", health.ready_path), ("live_path", health.live_path)):
        if not value.startswith("/"):
            raise ConfigError(f"health_checks.{key} must start with '/' ({value!r})")
    return health


def _url(block: Block, key: str) -> str | None:
    text = block.optional_string(key)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(f"{key} must be an http(s) URL with a host ({text!r})")
    return text


def _listener_fields(top: Block) -> dict[str, object]:
    given = [key for key in LISTENER_KEYS if top.has(key)]
    if "acme" in given:
        raise ConfigError(
            "acme is not supported: give serving_cert_file { cert_file_path, key_file_path } "
            "or serve behind a TLS proxy (listen_socket_path or insecure_addr)"
        )
    if len(given) != 1:
        listed = ", ".join(LISTENER_KEYS[1:])
        raise ConfigError(f"exactly one of {listed} must be configured (got {len(given)})")
    fields: dict[str, object] = {}
    if top.has("serving_cert_file"):
        fields["serving_cert"] = _read_serving_cert(top.block("serving_cert_file"))
    if top.has("listen_socket_path"):
        fields["listen_socket_path"] = Path(top.string("listen_socket_path"))
    if top.has("insecure_addr"):
        fields["insecure_addr"] = split_host_port(top.string("insecure_addr"), "insecure_addr")
    return fields


def _server_path_prefix(top: Block) -> str:
    prefix: str = top.string("server_path_prefix", "/")
    if not prefix.startswith("/"):
        raise ConfigError(f"server_path_prefix must start with '/' ({prefix!r})")
    return prefix if prefix.endswith("/") else prefix + "/"


def parse_oidc_config(text: str) -> OidcConfig:
    """The provider's config from its HCL (or JSON) text; ConfigError naming the key."""
    top = parse_document(text, expand_env=False, environ=None)
    listener = _listener_fields(top)
    allow_insecure = top.boolean("allow_insecure_scheme", False)
    if allow_insecure and "serving_cert" in listener:
        raise ConfigError(
            "allow_insecure_scheme works only with insecure_addr or listen_socket_path"
        )
    top.boolean("set_key_use", True)  # accepted for SPIRE configs; every key says use: sig
    health = _read_health_checks(top.block("health_checks")) if top.has("health_checks") else None
    config = OidcConfig(
        domains=DomainAllowList(top.string_list("domains")),
        source=_read_source(top),
        allow_insecure_scheme=allow_insecure,
        jwt_issuer=_url(top, "jwt_issuer"),
        jwks_uri=_url(top, "jwks_uri"),
        server_path_prefix=_server_path_prefix(top),
        log_level=top.choice("log_level", "info", LOG_LEVELS).upper(),
        log_format=top.choice("log_format", "text", ("text", "json")),
        log_path=top.string("log_path", ""),
        log_requests=top.boolean("log_requests", False),
        health_checks=health,
        **listener,  # type: ignore[arg-type]
    )
    top.finish()
    return config


def load_oidc_config(path: Path) -> OidcConfig:
    try:
        return parse_oidc_config(read_config_file(path))
    except ConfigError:
        raise
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None
