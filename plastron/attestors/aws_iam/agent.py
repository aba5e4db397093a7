"""The agent half of ``aws_iam``: sign an ``sts:GetCallerIdentity`` request with the task's
credentials (botocore's chain and SigV4 signer), with the ``Host`` and ``X-Plastron-Server-ID``
headers among the signed ones (and a random ``X-Plastron-Nonce``), and send it unsent, as
Vault's IAM login payload. A fresh request (a new ``X-Amz-Date`` and signature) is made for
every attestation. No challenge."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import urllib.parse

from plastron.attestors.aws_iam.config import NAME, SERVER_ID_HEADER, AwsIamAgentConfig
from plastron.errors import AttestationFailed, Unavailable

NONCE_HEADER = "X-Plastron-Nonce"
BODY = b"Action=GetCallerIdentity&Version=2011-06-15"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_request(config: AwsIamAgentConfig, credentials: object) -> bytes:
    """The payload for ``credentials`` (botocore Credentials, or anything with access_key,
    secret_key and token)."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415  # [cloud] extra
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415

    url = config.sts_endpoint + "/"
    headers = {
        "Host": urllib.parse.urlsplit(url).netloc,
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        SERVER_ID_HEADER: config.server_id,
        # two requests signed in the same second with the same credentials would otherwise be
        # identical, and the server refuses the second as a replay
        NONCE_HEADER: secrets.token_hex(16),
    }
    request = AWSRequest(method="POST", url=url, data=BODY, headers=headers)
    SigV4Auth(credentials, "sts", config.region).add_auth(request)
    signed = {name: [value] for name, value in request.headers.items()}
    payload = {
        "iam_http_request_method": "POST",
        "iam_request_url": _b64(url.encode()),
        "iam_request_body": _b64(BODY),
        "iam_request_headers": _b64(json.dumps(signed).encode()),
    }
    return json.dumps(payload).encode()


def _default_credentials() -> object:
    import botocore.session  # noqa: PLC0415  # [cloud] extra

    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise Unavailable(
            f"{NAME}: no AWS credentials (environment, container credentials, instance profile)"
        )
    return credentials.get_frozen_credentials()


class AwsIamAgentAttestor:
    name = NAME

    def __init__(self, config: AwsIamAgentConfig, credentials: object | None = None) -> None:
        self._config = config
        self._credentials = credentials  # None: botocore's chain, at each attestation

    def __repr__(self) -> str:
        return f"AwsIamAgentAttestor({self._config.sts_endpoint!r})"

    async def payload(self) -> bytes:
        def build() -> bytes:
            creds = self._credentials or _default_credentials()
            return sign_request(self._config, creds)

        # the credential chain may call the container credentials endpoint: off the loop
        return await asyncio.to_thread(build)

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed(f"{NAME}: the server sent a challenge; aws_iam has none")
