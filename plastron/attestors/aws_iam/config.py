"""Configuration of both aws_iam halves.

Server ``plugin_data``: ``server_id`` (required: the value the agent must sign into the
``X-Plastron-Server-ID`` header, so a request made for another server is refused here),
``account_allow_list`` (required: AWS account IDs whose roles may attest), ``sts_endpoint``
(default ``https://sts.amazonaws.com``; where the server sends the request), ``allowed_hosts``
(the ``Host`` values a request may be signed for; default the endpoint's host),
``max_request_age`` (default ``5m``: how far the request's ``X-Amz-Date`` may be from now, either
way; a signed request is refused after that, and inside it a second use is a replay).

Agent ``plugin_data``: ``server_id`` (required, the server's), ``sts_endpoint`` (default
``https://sts.amazonaws.com``), ``region`` (default ``us-east-1``, the signing region of the
global endpoint). Credentials come from botocore's chain: environment, the ECS/Fargate
container credentials endpoint, Lambda's environment, the instance profile.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from dataclasses import dataclass

from plastron.attestors.cloud_http import check_secure_url
from plastron.configs.block import Block
from plastron.errors import ConfigError

NAME = "aws_iam"
SERVER_ID_HEADER = "X-Plastron-Server-ID"
DEFAULT_STS_ENDPOINT = "https://sts.amazonaws.com"
DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_REQUEST_AGE = dt.timedelta(minutes=5)
# AWS accepts a SigV4 request up to 15 minutes from its X-Amz-Date
MAX_REQUEST_AGE_LIMIT = dt.timedelta(minutes=15)
_ACCOUNT = re.compile(r"[0-9]{12}")
_SERVER_ID = re.compile(r"[\x21-\x7e]{1,256}")


def _server_id(s: Block) -> str:
    value: str = s.string("server_id")
    if not _SERVER_ID.fullmatch(value):
        raise ConfigError(f"{s.where('server_id')} must be 1 to 256 printable ASCII characters")
    return value


def _endpoint(s: Block) -> str:
    url = check_secure_url(s.string("sts_endpoint", DEFAULT_STS_ENDPOINT), s.where("sts_endpoint"))
    return url.rstrip("/")


def endpoint_host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()


@dataclass(frozen=True)
class AwsIamServerConfig:
    server_id: str
    account_allow_list: frozenset[str]
    sts_endpoint: str = DEFAULT_STS_ENDPOINT
    allowed_hosts: frozenset[str] = frozenset({"sts.amazonaws.com"})
    max_request_age: dt.timedelta = DEFAULT_MAX_REQUEST_AGE

    @classmethod
    def from_settings(cls, s: Block) -> AwsIamServerConfig:
        server_id = _server_id(s)
        accounts = s.string_list("account_allow_list")
        if not accounts or not all(_ACCOUNT.fullmatch(a) for a in accounts):
            raise ConfigError(
                f"{s.where('account_allow_list')} is required: 12-digit AWS account IDs"
            )
        endpoint = _endpoint(s)
        hosts = s.string_list("allowed_hosts") or (endpoint_host(endpoint),)
        age = s.duration("max_request_age", DEFAULT_MAX_REQUEST_AGE)
        if age > MAX_REQUEST_AGE_LIMIT:
            raise ConfigError(f"{s.where('max_request_age')} may be at most 15m (AWS's own limit)")
        config = cls(
            server_id=server_id,
            account_allow_list=frozenset(accounts),
            sts_endpoint=endpoint,
            allowed_hosts=frozenset(h.lower() for h in hosts),
            max_request_age=age,
        )
        s.finish()
        return config


@dataclass(frozen=True)
class AwsIamAgentConfig:
    server_id: str
    sts_endpoint: str = DEFAULT_STS_ENDPOINT
    region: str = DEFAULT_REGION

    @classmethod
    def from_settings(cls, s: Block) -> AwsIamAgentConfig:
        config = cls(
            server_id=_server_id(s), sts_endpoint=_endpoint(s),
            region=s.string("region", DEFAULT_REGION) or DEFAULT_REGION,
        )  # fmt: skip
        s.finish()
        return config
