"""The agent half of aws_iid: read the instance identity document and its signatures from the
EC2 instance metadata service with IMDSv2 (a session token from ``PUT /latest/api/token``, then
``GET /latest/dynamic/instance-identity/{document,signature,rsa2048}``), and send them in SPIRE's
payload. IMDSv1 is never used: it answers any request that reaches it (the SSRF-prone path).

No proxy is used (the metadata service is link-local), redirects are refused, every request
has the configured timeout and every response a size bound; an unreachable service is one
line naming the endpoint.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

from plastron.attestors.aws_iid.config import AwsIidAgentConfig
from plastron.attestors.aws_iid.document import NAME
from plastron.attestors.aws_iid.wire import Payload, encode_payload
from plastron.errors import AttestationFailed, Unavailable

TOKEN_TTL_SECONDS = 300
MAX_RESPONSE_BYTES = 32 * 1024
PATHS = {
    "document": "/latest/dynamic/instance-identity/document",
    "signature": "/latest/dynamic/instance-identity/signature",
    "rsa2048": "/latest/dynamic/instance-identity/rsa2048",
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class AwsIidAgentAttestor:
    name = NAME

    def __init__(self, config: AwsIidAgentConfig) -> None:
        self._config = config

    def __repr__(self) -> str:
        return f"AwsIidAgentAttestor(endpoint={self._config.metadata_endpoint!r})"

    async def payload(self) -> bytes:
        return await asyncio.to_thread(self._fetch)

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed(f"{NAME}: the server sent a challenge; aws_iid has none")

    def _fetch(self) -> bytes:
        token = self._request("PUT", "/latest/api/token", {
            "X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS),
        })  # fmt: skip
        headers = {"X-aws-ec2-metadata-token": token.decode("ascii", "replace")}
        got = {name: self._request("GET", path, headers) for name, path in PATHS.items()}
        try:
            return encode_payload(
                Payload(
                    document=got["document"],
                    signature=got["signature"].decode("ascii"),
                    rsa2048=got["rsa2048"].decode("ascii"),
                )
            )
        except UnicodeDecodeError:
            raise AttestationFailed(
                f"{NAME}: the metadata service at {self._config.metadata_endpoint} served a "
                "document or signature that is not text"
            ) from None

    def _request(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        url = self._config.metadata_endpoint + path
        request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self._config.timeout.total_seconds()) as resp:
                body: bytes = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise AttestationFailed(
                f"{NAME}: the EC2 metadata service answered {method} {path} with HTTP "
                f"{exc.code} ({self._config.metadata_endpoint})"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(
                f"{NAME}: the EC2 metadata service at {self._config.metadata_endpoint} is "
                f"unreachable: {reason}"
            ) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise AttestationFailed(
                f"{NAME}: the metadata service's answer to {path} is larger than "
                f"{MAX_RESPONSE_BYTES} bytes"
            )
        return body
