"""The agent half of ``gcp_iit``: ask the metadata server for an instance identity token
(``format=full``, the configured audience, header ``Metadata-Flavor: Google``) and send it as
the payload, as SPIRE's agent does. There is no challenge."""

from __future__ import annotations

import urllib.parse

from plastron.attestors.cloud_http import request
from plastron.attestors.gcp_iit.config import GcpIitAgentConfig
from plastron.attestors.gcp_iit.token import NAME
from plastron.attestors.jwks import MAX_TOKEN_BYTES
from plastron.errors import AttestationFailed, Unavailable

PATH = "/computeMetadata/v1/instance/service-accounts/{account}/identity"


def identity_token_url(config: GcpIitAgentConfig) -> str:
    account = urllib.parse.quote(config.service_account, safe="@")
    query = urllib.parse.urlencode({"audience": config.audience, "format": "full"})
    return f"http://{config.identity_token_host}{PATH.format(account=account)}?{query}"


class GcpIitAgentAttestor:
    name = NAME

    def __init__(self, config: GcpIitAgentConfig) -> None:
        self._config = config
        self.url = identity_token_url(config)

    def __repr__(self) -> str:
        return f"GcpIitAgentAttestor({self.url!r})"

    async def payload(self) -> bytes:
        what = f"{NAME}: identity token from the metadata server"
        # never through a proxy: the metadata server answers on the instance's own network
        resp = await request(
            "GET", self.url, what=what, headers={"Metadata-Flavor": "Google"},
            max_bytes=MAX_TOKEN_BYTES, use_proxy=False,
        )  # fmt: skip
        if resp.status != 200:
            raise Unavailable(f"{what}: {self.url} answered HTTP {resp.status}: {resp.excerpt()}")
        token = resp.body.strip()
        if not token or not token.isascii() or token.count(b".") != 2:
            raise Unavailable(f"{what}: {self.url} answered with something that is not a JWT")
        return token

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed(f"{NAME}: the server sent a challenge; gcp_iit has none")
