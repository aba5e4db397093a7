"""``server { federation { ... } }``: SPIRE's bundle endpoint and ``federates_with`` blocks.

Shapes as SPIRE reads them (doc/spire_server.md, "Federation configuration")::

    federation {
      bundle_endpoint {
        address = "0.0.0.0"   port = 8443   refresh_hint = "5m"
        profile "https_web" { serving_cert_file { cert_file_path = ".." key_file_path = ".." } }
        # or: profile "https_spiffe" {}   (the default: the server's own X509-SVID)
      }
      federates_with "domain.test" {
        bundle_endpoint_url = "https://host:8443"
        bundle_endpoint_profile "https_spiffe" {
          endpoint_spiffe_id = "spiffe://domain.test/spire/server"
        }
        # or: bundle_endpoint_profile "https_web" {}
      }
    }

ACME (``profile "https_web" { acme {} }``) is refused by name: Plastron does not run an ACME
client, and an operator must not believe certificates are being obtained.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.configs.block import Block, as_mapping
from plastron.configs.sections import PORT_RANGE
from plastron.configs.unsupported import NOT_SUPPORTED
from plastron.errors import ConfigError, InvalidArgument
from plastron.records import FederationRelationship
from plastron.spiffe.ids import SpiffeId, TrustDomain

HTTPS_WEB = "https_web"
HTTPS_SPIFFE = "https_spiffe"
PROFILES = (HTTPS_WEB, HTTPS_SPIFFE)


@dataclass(frozen=True)
class ServingCertFile:
    cert_file_path: Path
    key_file_path: Path
    # How often the files are re-read (SPIRE's default), so a renewed certificate is served.
    file_sync_interval: dt.timedelta = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class BundleEndpointConfig:
    address: str = "0.0.0.0"  # noqa: S104 - SPIRE's default: the endpoint is for other domains
    port: int = 443
    # spiffe_refresh_hint in the served bundle (SPIRE's default).
    refresh_hint: dt.timedelta = dt.timedelta(minutes=5)
    profile: str = HTTPS_SPIFFE
    serving_cert_file: ServingCertFile | None = None


@dataclass(frozen=True)
class FederationConfig:
    bundle_endpoint: BundleEndpointConfig | None = None
    federates_with: tuple[FederationRelationship, ...] = ()


def _single_named(value: object, where: str) -> tuple[str, Block]:
    """A ``name "label" { ... }`` block: exactly one label."""
    body = as_mapping(value, where)
    if len(body) != 1:
        raise ConfigError(
            f'{where} must be given once with one label, e.g. {where} "https_web" {{}}'
        )
    label = next(iter(body))
    return label, Block(body[label], f"{where}.{label}")


def _serving_cert_file(block: Block) -> ServingCertFile:
    d = ServingCertFile
    cert = block.string("cert_file_path")
    key = block.string("key_file_path")
    interval = block.duration("file_sync_interval", d.file_sync_interval)
    block.finish()
    return ServingCertFile(Path(cert), Path(key), interval)


def _endpoint_profile(block: Block) -> tuple[str, ServingCertFile | None]:
    where = block.where("profile")
    raw = block.raw("profile")
    if raw is None:
        return HTTPS_SPIFFE, None
    name, body = _single_named(raw, where)
    if name == HTTPS_SPIFFE:
        body.finish()
        return name, None
    if name != HTTPS_WEB:
        raise ConfigError(f"{where} must be https_web or https_spiffe ({name!r})")
    if body.has("acme"):
        raise ConfigError(f"{NOT_SUPPORTED}: {body.where('acme')}")
    if not body.has("serving_cert_file"):
        raise ConfigError(f"{body.where('serving_cert_file')} is required")
    serving = _serving_cert_file(body.block("serving_cert_file"))
    body.finish()
    return name, serving


def _bundle_endpoint(block: Block) -> BundleEndpointConfig:
    d = BundleEndpointConfig
    if block.has("acme"):
        raise ConfigError(f"{NOT_SUPPORTED}: {block.where('acme')}")
    address = block.string("address", d.address)
    port = block.integer("port", d.port, *PORT_RANGE)
    hint = block.duration("refresh_hint", d.refresh_hint)
    profile, serving = _endpoint_profile(block)
    block.finish()
    return BundleEndpointConfig(address, port, hint, profile, serving)


def _relationship(td_text: str, block: Block) -> FederationRelationship:
    try:
        td = TrustDomain.parse(td_text)
    except InvalidArgument as exc:
        raise ConfigError(f"{block.path}: {td_text!r} is not a valid trust domain: {exc}") from None
    url = block.string("bundle_endpoint_url")
    where = block.where("bundle_endpoint_profile")
    if not block.has("bundle_endpoint_profile"):
        raise ConfigError(f"{where} is required")
    profile, body = _single_named(block.raw("bundle_endpoint_profile"), where)
    if profile not in PROFILES:
        raise ConfigError(f"{where} must be https_web or https_spiffe ({profile!r})")
    endpoint_id = None
    if profile == HTTPS_SPIFFE:
        text = body.string("endpoint_spiffe_id")
        try:
            endpoint_id = SpiffeId.parse(text)
        except InvalidArgument as exc:
            raise ConfigError(f"{body.where('endpoint_spiffe_id')}: {exc}") from None
    body.finish()
    block.finish()
    rel = FederationRelationship(td, url, profile, endpoint_id)  # type: ignore[arg-type]
    try:
        check_relationship(rel)
    except InvalidArgument as exc:
        raise ConfigError(f"{block.path}: {exc}") from None
    return rel


def check_relationship(rel: FederationRelationship) -> None:
    """The checks SPIRE makes of a relationship, from config or from the API."""
    name = rel.trust_domain.name
    if not rel.bundle_endpoint_url.startswith("https://"):
        raise InvalidArgument(
            f"federation with {name!r}: bundle endpoint URL {rel.bundle_endpoint_url!r} "
            "must use the https scheme"
        )
    if rel.profile == HTTPS_WEB and rel.endpoint_spiffe_id is not None:
        raise InvalidArgument(
            f"federation with {name!r}: endpoint_spiffe_id is for https_spiffe, not https_web"
        )


def _federates_with(raw: Any, where: str) -> tuple[FederationRelationship, ...]:
    # pyhcl gives one dict per labelled block (a list when repeated); JSON gives a dict.
    items = raw if isinstance(raw, list) else [raw]
    out: dict[TrustDomain, FederationRelationship] = {}
    for item in items:
        for label, body in as_mapping(item, where).items():
            rel = _relationship(label, Block(body, f"{where}.{label}"))
            if rel.trust_domain in out:
                raise ConfigError(f"{where}: {label!r} is given more than once")
            out[rel.trust_domain] = rel
    return tuple(out.values())


def read_federation(block: Block, own: TrustDomain) -> FederationConfig:
    endpoint = (
        _bundle_endpoint(block.block("bundle_endpoint")) if block.has("bundle_endpoint") else None
    )
    where = block.where("federates_with")
    rels = (
        _federates_with(block.raw("federates_with"), where) if block.has("federates_with") else ()
    )
    block.finish()
    for rel in rels:
        if rel.trust_domain == own:
            raise ConfigError(f"{where}: {own.name!r} is the server's own trust domain")
    return FederationConfig(endpoint, rels)
