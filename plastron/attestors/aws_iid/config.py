"""Configuration of both aws_iid halves: SPIRE's keys, plus Plastron's.

Server ``plugin_data`` (SPIRE's keys): ``access_key_id``, ``secret_access_key`` (default: the
AWS SDK's credential chain: environment, shared files, instance role), ``assume_role``,
``partition`` (``aws`` | ``aws-cn`` | ``aws-us-gov``), ``skip_block_device``,
``disable_instance_profile_selectors``, ``account_ids_for_local_validation`` (accounts whose
instances skip the block-device check), ``agent_path_template``. Refused with one line:
``verify_organization`` and ``validate_eks_cluster_membership`` (not implemented).

Plastron's server keys:

- ``account_allow_list``: the AWS accounts whose instances may attest (default: any — then the
  EC2 API, which only sees the server's own accounts, is what limits them, as in SPIRE);
- ``use_ec2_api`` (default true): look the instance up with DescribeInstances (and its IAM
  role with GetInstanceProfile) for the tag, security-group and IAM-role selectors, the
  block-device check and ``.Tags`` in the template; false verifies offline only and then
  requires ``account_allow_list``;
- ``ec2_endpoint``, ``iam_endpoint``, ``sts_endpoint``: API endpoints (VPC endpoints, tests);
- ``allow_dsa_pkcs7`` (default false): accept a payload whose only signature is the legacy DSA
  ``pkcs7``;
- ``extra_certificates { <kind> { <region> = "<PEM file>" } }``, kind ``rsa2048`` | ``rsa`` |
  ``dsa``: certificates added to AWS's published ones.

Agent ``plugin_data``: ``ec2_metadata_endpoint`` (SPIRE's key; default
``http://169.254.169.254``; a trailing ``/latest`` is accepted, as SPIRE's docs write it) and
Plastron's ``metadata_timeout`` (default 5s).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from plastron.attestors.aws_iid.certificates import KINDS, AwsCertificates, load_pem_file
from plastron.attestors.template import PathTemplate, TemplateSchema
from plastron.configs.block import Block
from plastron.errors import ConfigError

PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
UNSUPPORTED_KEYS = ("verify_organization", "validate_eks_cluster_membership")
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254"
DEFAULT_METADATA_TIMEOUT = dt.timedelta(seconds=5)
MAX_METADATA_TIMEOUT = dt.timedelta(minutes=2)
TEMPLATE_SCHEMA = TemplateSchema(
    method="aws_iid",
    fields=frozenset(
        {("PluginName",), ("AccountID",), ("Region",), ("InstanceID",), ("TrustDomain",)}
    ),
    maps=frozenset({"Tags"}),
)
DEFAULT_TEMPLATE = PathTemplate.parse(
    "/{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}", TEMPLATE_SCHEMA
)


@dataclass(frozen=True)
class AwsApiConfig:
    """How the server reaches the EC2, IAM and STS APIs."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    assume_role: str | None = None
    partition: str = "aws"
    ec2_endpoint: str | None = None
    iam_endpoint: str | None = None
    sts_endpoint: str | None = None


@dataclass(frozen=True)
class AwsIidServerConfig:
    certificates: AwsCertificates = field(default_factory=AwsCertificates.published)
    agent_path_template: PathTemplate = DEFAULT_TEMPLATE
    account_allow_list: frozenset[str] = frozenset()
    allow_dsa_pkcs7: bool = False
    use_ec2_api: bool = True
    skip_block_device: bool = False
    disable_instance_profile_selectors: bool = False
    local_validation_accounts: frozenset[str] = frozenset()
    api: AwsApiConfig = field(default_factory=AwsApiConfig)


@dataclass(frozen=True)
class AwsIidAgentConfig:
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT
    timeout: dt.timedelta = DEFAULT_METADATA_TIMEOUT


def read_server_config(settings: Block, base_dir: Path | None) -> AwsIidServerConfig:
    for key in UNSUPPORTED_KEYS:
        if settings.has(key):
            raise ConfigError(f"{settings.where(key)} is not supported by Plastron's aws_iid")
    template = DEFAULT_TEMPLATE
    text = settings.optional_string("agent_path_template")
    if text is not None:
        template = PathTemplate.parse(text, TEMPLATE_SCHEMA)
        template.check_shape()
    config = AwsIidServerConfig(
        certificates=_extra_certificates(settings.block("extra_certificates"), base_dir),
        agent_path_template=template,
        account_allow_list=_accounts(settings, "account_allow_list"),
        allow_dsa_pkcs7=settings.boolean("allow_dsa_pkcs7", False),
        use_ec2_api=settings.boolean("use_ec2_api", True),
        skip_block_device=settings.boolean("skip_block_device", False),
        disable_instance_profile_selectors=settings.boolean(
            "disable_instance_profile_selectors", False
        ),
        local_validation_accounts=_accounts(settings, "account_ids_for_local_validation"),
        api=_api_config(settings),
    )
    settings.finish()
    _check_offline(config, settings)
    return config


def _check_offline(config: AwsIidServerConfig, settings: Block) -> None:
    if config.use_ec2_api:
        return
    if not config.account_allow_list:
        raise ConfigError(
            f"{settings.where('use_ec2_api')} = false needs account_allow_list: without the "
            "EC2 API, an instance of any AWS account would attest"
        )
    if config.agent_path_template.uses_map("Tags"):
        raise ConfigError(
            f"{settings.where('agent_path_template')} uses .Tags, which needs use_ec2_api"
        )


def _accounts(settings: Block, key: str) -> frozenset[str]:
    accounts = settings.string_list(key)
    for account in accounts:
        if len(account) != 12 or not account.isascii() or not account.isdigit():
            raise ConfigError(f"{settings.where(key)}: {account!r} is not a 12-digit account ID")
    return frozenset(accounts)


def _endpoint(settings: Block, key: str) -> str | None:
    url = settings.optional_string(key)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{settings.where(key)} must be an http(s) URL, not {url!r}")
    return url


def _api_config(settings: Block) -> AwsApiConfig:
    key_id = settings.optional_string("access_key_id")
    secret = settings.optional_string("secret_access_key")
    if (key_id is None) != (secret is None):
        raise ConfigError(
            f"{settings.path}: give both access_key_id and secret_access_key, or neither"
        )
    partition = settings.choice("partition", "aws", PARTITIONS)
    role = settings.optional_string("assume_role")
    if role is not None and (
        len(role) > 64 or not all(c.isalnum() or c in "+=,.@_-" for c in role)
    ):
        raise ConfigError(f"{settings.where('assume_role')} is not an IAM role name: {role!r}")
    return AwsApiConfig(
        access_key_id=key_id,
        secret_access_key=secret,
        assume_role=role,
        partition=partition,
        ec2_endpoint=_endpoint(settings, "ec2_endpoint"),
        iam_endpoint=_endpoint(settings, "iam_endpoint"),
        sts_endpoint=_endpoint(settings, "sts_endpoint"),
    )


def _extra_certificates(block: Block, base_dir: Path | None) -> AwsCertificates:
    certificates = AwsCertificates.published()
    for kind in KINDS:
        regions = block.block(kind)
        for region in regions.keys():  # noqa: SIM118 (a Block, not a dict)
            path = Path(regions.string(region))
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            certs = load_pem_file(_read(path, regions.where(region)), kind, str(path))
            certificates = certificates.with_extra(kind, region, certs)
        regions.finish()
    try:
        block.finish()
    except ConfigError as exc:
        raise ConfigError(f"{exc}; the kinds are {', '.join(KINDS)}") from None
    return certificates


def _read(path: Path, where: str) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(1024 * 1024)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {exc.strerror}") from None


def read_agent_config(settings: Block) -> AwsIidAgentConfig:
    endpoint = settings.string("ec2_metadata_endpoint", DEFAULT_METADATA_ENDPOINT)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(
            f"{settings.where('ec2_metadata_endpoint')} must be an http(s) URL, not {endpoint!r}"
        )
    endpoint = endpoint.rstrip("/").removesuffix("/latest")
    timeout = settings.duration("metadata_timeout", DEFAULT_METADATA_TIMEOUT)
    if timeout > MAX_METADATA_TIMEOUT:
        raise ConfigError(
            f"{settings.where('metadata_timeout')} must be at most {MAX_METADATA_TIMEOUT}"
        )
    settings.finish()
    return AwsIidAgentConfig(endpoint, timeout)
