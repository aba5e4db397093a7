"""Configuration of both azure_msi halves, with SPIRE's keys, and the agent ID template fields.

Server ``plugin_data`` (SPIRE's): ``tenants`` (required; a map from tenant ID to
``resource_id`` (default Resource Manager), and ``subscription_id`` + ``app_id`` +
``app_secret`` for Resource Manager access as an app registration), ``agent_path_template``
(default ``/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}``). The app secret comes from
``app_secret_env`` or ``app_secret_file`` (an inline ``app_secret`` is refused, as every secret
in Plastron's plugin_data). A tenant without app credentials uses the server's own managed
identity (the Instance Metadata Service), as SPIRE's default credential does on a VM.
Plastron's own keys: ``jwks_url`` (default Entra's) or ``jwks_file``,
``resource_manager_endpoint``, ``authority_endpoint``, ``metadata_endpoint``.

Agent ``plugin_data`` (SPIRE's): ``resource_id``; Plastron's own: ``metadata_endpoint``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plastron.attestors.azure_msi.token import DEFAULT_RESOURCE, NAME, MsiToken
from plastron.attestors.cloud_http import check_secure_url, check_url
from plastron.attestors.jwks_source import key_source_setting
from plastron.attestors.template import MappingValues, PathTemplate, TemplateSchema
from plastron.configs.block import Block
from plastron.configs.secret import resolve_secret
from plastron.errors import ConfigError

ENTRA_JWKS_URL = "https://login.microsoftonline.com/common/discovery/keys"
RESOURCE_MANAGER = "https://management.azure.com/"
AUTHORITY = "https://login.microsoftonline.com/"
IMDS = "http://169.254.169.254"
MAX_TENANTS = 100
_CREDENTIAL_KEYS = ("subscription_id", "app_id", "app_secret", "app_secret_env", "app_secret_file")

SCHEMA = TemplateSchema(
    method=NAME, fields=frozenset({("PluginName",), ("TenantID",), ("PrincipalID",)})
)
DEFAULT_TEMPLATE = PathTemplate.parse(
    "/{{ .PluginName }}/{{ .TenantID }}/{{ .PrincipalID }}", SCHEMA
)


def template_values(token: MsiToken) -> MappingValues:
    fields = {"PluginName": NAME, "TenantID": token.tenant_id, "PrincipalID": token.principal_id}
    return MappingValues(NAME, {(k,): v for k, v in fields.items()})


@dataclass(frozen=True)
class AppCredentials:
    """An app registration's client secret, for Resource Manager."""

    subscription_id: str
    app_id: str
    app_secret: str = field(repr=False)


@dataclass(frozen=True)
class TenantConfig:
    tenant_id: str
    resource_id: str = DEFAULT_RESOURCE
    app: AppCredentials | None = None  # None: the server's managed identity

    @classmethod
    def from_block(cls, tenant_id: str, s: Block) -> TenantConfig:
        resource = s.string("resource_id", DEFAULT_RESOURCE) or DEFAULT_RESOURCE
        given = {k: s.raw(k) for k in _CREDENTIAL_KEYS if s.has(k)}
        s.finish()
        if not given:
            return cls(tenant_id, resource)
        for key in ("subscription_id", "app_id"):
            if not isinstance(given.get(key), str) or not given[key]:
                raise ConfigError(f"{s.where(key)} is required with app credentials")
        secret = resolve_secret(given, "app_secret", where=s.path)
        return cls(
            tenant_id, resource, AppCredentials(given["subscription_id"], given["app_id"], secret)
        )


@dataclass(frozen=True)
class AzureMsiServerConfig:
    tenants: Mapping[str, TenantConfig]  # by lower-case tenant ID
    agent_path_template: PathTemplate = DEFAULT_TEMPLATE
    jwks_url: str | None = ENTRA_JWKS_URL
    jwks_file: Path | None = None
    resource_manager_endpoint: str = RESOURCE_MANAGER
    authority_endpoint: str = AUTHORITY
    metadata_endpoint: str = IMDS

    @classmethod
    def from_settings(cls, s: Block, *, base_dir: Path | None = None) -> AzureMsiServerConfig:
        tenants_block = s.block("tenants")
        tenants: dict[str, TenantConfig] = {}
        tenant_ids = tenants_block.keys()
        for tenant_id in tenant_ids:
            if not tenant_id or tenant_id.lower() in tenants:
                raise ConfigError(f"{tenants_block.where(tenant_id)}: empty or repeated tenant ID")
            tenants[tenant_id.lower()] = TenantConfig.from_block(
                tenant_id, tenants_block.block(tenant_id)
            )
        tenants_block.finish()
        if not tenants or len(tenants) > MAX_TENANTS:
            raise ConfigError(f"{s.where('tenants')}: give 1 to {MAX_TENANTS} tenants")
        template = DEFAULT_TEMPLATE
        if s.has("agent_path_template"):
            template = PathTemplate.parse(s.string("agent_path_template"), SCHEMA)
        template.check_shape()
        jwks_url, jwks_file = key_source_setting(s, base_dir, ENTRA_JWKS_URL)
        config = cls(
            tenants=tenants,
            agent_path_template=template,
            jwks_url=jwks_url,
            jwks_file=jwks_file,
            resource_manager_endpoint=_root(s, "resource_manager_endpoint", RESOURCE_MANAGER),
            authority_endpoint=_root(s, "authority_endpoint", AUTHORITY),
            metadata_endpoint=metadata_endpoint(s),
        )
        s.finish()
        return config


@dataclass(frozen=True)
class AzureMsiAgentConfig:
    resource_id: str = DEFAULT_RESOURCE
    metadata_endpoint: str = IMDS

    @classmethod
    def from_settings(cls, s: Block) -> AzureMsiAgentConfig:
        resource = s.string("resource_id", DEFAULT_RESOURCE) or DEFAULT_RESOURCE
        config = cls(resource, metadata_endpoint(s))
        s.finish()
        return config


def metadata_endpoint(s: Block) -> str:
    """The Instance Metadata Service root (plain http: it is link-local)."""
    return check_url(
        s.string("metadata_endpoint", IMDS), s.where("metadata_endpoint"), secure=False
    ).rstrip("/")


def _root(s: Block, key: str, default: str) -> str:
    url = check_secure_url(s.string(key, default), s.where(key))
    return url if url.endswith("/") else url + "/"
