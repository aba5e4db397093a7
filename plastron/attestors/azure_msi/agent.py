"""The agent half of ``azure_msi``: get the managed identity's token for the configured resource
from the Instance Metadata Service (header ``Metadata: true``) and send SPIRE's payload
``{"token": "..."}``. There is no challenge."""

from __future__ import annotations

import json

from plastron.attestors.azure_msi.config import AzureMsiAgentConfig
from plastron.attestors.azure_msi.imds import managed_identity_token
from plastron.attestors.azure_msi.token import NAME
from plastron.errors import AttestationFailed


class AzureMsiAgentAttestor:
    name = NAME

    def __init__(self, config: AzureMsiAgentConfig) -> None:
        self._config = config

    def __repr__(self) -> str:
        return f"AzureMsiAgentAttestor({self._config.metadata_endpoint!r})"

    async def payload(self) -> bytes:
        what = f"{NAME}: managed identity token from the instance metadata service"
        token, _ = await managed_identity_token(
            self._config.metadata_endpoint, self._config.resource_id, what=what
        )
        return json.dumps({"token": token}).encode("ascii")

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed(f"{NAME}: the server sent a challenge; azure_msi has none")
