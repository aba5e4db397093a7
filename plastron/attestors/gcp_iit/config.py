"""Configuration of both gcp_iit halves, with SPIRE's keys, and the agent ID template fields.

Server ``plugin_data`` (SPIRE's): ``projectid_allow_list`` (required), ``agent_path_template``
(default ``/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}``), ``use_instance_metadata``,
``service_account_file``, ``allowed_label_keys``, ``allowed_metadata_keys``,
``max_metadata_value_size`` (128). Plastron's own: ``jwks_url`` (default Google's) or
``jwks_file``, ``compute_endpoint`` (the Compute Engine API root), ``audience`` (default
SPIRE's fixed ``spire-gcp-node-attestor``).

Agent ``plugin_data`` (SPIRE's): ``identity_token_host`` (``metadata.google.internal``; a
``host:port`` works, for a proxy or a test), ``service_account`` (``default``); Plastron's own:
``audience`` (must match the server's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plastron.attestors.cloud_http import check_secure_url
from plastron.attestors.gcp_iit.token import DEFAULT_AUDIENCE, NAME, IdentityToken
from plastron.attestors.jwks_source import key_source_setting
from plastron.attestors.template import MappingValues, PathTemplate, TemplateSchema
from plastron.configs.block import Block
from plastron.errors import ConfigError

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
COMPUTE_ENDPOINT = "https://compute.googleapis.com/compute/v1/"
DEFAULT_METADATA_HOST = "metadata.google.internal"
DEFAULT_MAX_METADATA_VALUE_SIZE = 128

_FIELDS = (
    "PluginName", "ProjectID", "InstanceID", "ProjectNumber", "Zone", "InstanceName",
    "InstanceCreationTimestamp", "ServiceAccount",
)  # fmt: skip
SCHEMA = TemplateSchema(method=NAME, fields=frozenset((f,) for f in _FIELDS))
DEFAULT_TEMPLATE = PathTemplate.parse(
    "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}", SCHEMA
)


def template_values(token: IdentityToken) -> MappingValues:
    """SPIRE's template data: the compute_engine claims, the plugin name, and the service
    account e-mail with ``@`` replaced by ``_``."""
    fields = {
        "PluginName": NAME,
        "ProjectID": token.project_id,
        "InstanceID": token.instance_id,
        "ProjectNumber": str(token.project_number),
        "Zone": token.zone,
        "InstanceName": token.instance_name,
        "InstanceCreationTimestamp": str(token.instance_creation_timestamp),
        "ServiceAccount": token.email.replace("@", "_"),
    }
    return MappingValues(NAME, {(k,): v for k, v in fields.items()})


@dataclass(frozen=True)
class GcpIitServerConfig:
    projectid_allow_list: frozenset[str]
    agent_path_template: PathTemplate = DEFAULT_TEMPLATE
    audience: str = DEFAULT_AUDIENCE
    jwks_url: str | None = GOOGLE_JWKS_URL
    jwks_file: Path | None = None
    use_instance_metadata: bool = False
    service_account_file: Path | None = None
    compute_endpoint: str = COMPUTE_ENDPOINT
    allowed_label_keys: frozenset[str] = frozenset()
    allowed_metadata_keys: frozenset[str] = frozenset()
    max_metadata_value_size: int = DEFAULT_MAX_METADATA_VALUE_SIZE

    @classmethod
    def from_settings(cls, s: Block, *, base_dir: Path | None = None) -> GcpIitServerConfig:
        projects = s.string_list("projectid_allow_list")
        if not projects or not all(projects):
            raise ConfigError(f"{s.where('projectid_allow_list')} is required (project IDs)")
        template = DEFAULT_TEMPLATE
        if s.has("agent_path_template"):
            template = PathTemplate.parse(s.string("agent_path_template"), SCHEMA)
        template.check_shape()
        jwks_url, jwks_file = key_source_setting(s, base_dir, GOOGLE_JWKS_URL)
        use_metadata = s.boolean("use_instance_metadata", False)
        account_file = _path(s.optional_string("service_account_file"), base_dir)
        if account_file is None and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            account_file = Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
        if use_metadata and account_file is None:
            raise ConfigError(
                f"{s.where('use_instance_metadata')} needs service_account_file (or "
                "GOOGLE_APPLICATION_CREDENTIALS): Plastron does not take the credentials of "
                "the GCE metadata server"
            )
        config = cls(
            projectid_allow_list=frozenset(projects),
            agent_path_template=template,
            audience=_non_empty(s, "audience", DEFAULT_AUDIENCE),
            jwks_url=jwks_url,
            jwks_file=jwks_file,
            use_instance_metadata=use_metadata,
            service_account_file=account_file,
            compute_endpoint=_endpoint(s, "compute_endpoint", COMPUTE_ENDPOINT),
            allowed_label_keys=frozenset(s.string_list("allowed_label_keys")),
            allowed_metadata_keys=frozenset(s.string_list("allowed_metadata_keys")),
            max_metadata_value_size=s.integer(
                "max_metadata_value_size", DEFAULT_MAX_METADATA_VALUE_SIZE, 1, 1024 - 64
            ),
        )
        s.finish()
        return config


@dataclass(frozen=True)
class GcpIitAgentConfig:
    identity_token_host: str = DEFAULT_METADATA_HOST
    service_account: str = "default"
    audience: str = DEFAULT_AUDIENCE

    @classmethod
    def from_settings(cls, s: Block) -> GcpIitAgentConfig:
        host = _non_empty(s, "identity_token_host", DEFAULT_METADATA_HOST)
        if any(ch in host for ch in "/?#@ ") or "://" in host:
            raise ConfigError(
                f"{s.where('identity_token_host')} must be a host[:port], not {host!r}"
            )
        config = cls(
            identity_token_host=host,
            service_account=_non_empty(s, "service_account", "default"),
            audience=_non_empty(s, "audience", DEFAULT_AUDIENCE),
        )
        s.finish()
        return config


def _non_empty(s: Block, key: str, default: str) -> str:
    value: str = s.string(key, default)
    if not value:
        raise ConfigError(f"{s.where(key)} must be a non-empty string")
    return value


def _path(value: str | None, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


def _endpoint(s: Block, key: str, default: str) -> str:
    url = check_secure_url(s.string(key, default), s.where(key))
    return url if url.endswith("/") else url + "/"
