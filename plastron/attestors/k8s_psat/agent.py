"""The agent half of ``k8s_psat``: read the projected service-account token the kubelet mounts
at ``token_path`` and send SPIRE's payload ``{"cluster": ..., "token": ...}``. The file is read
at each attestation (the kubelet rotates it). There is no challenge."""

from __future__ import annotations

import asyncio
import json

from plastron.attestors.k8s_psat.config import NAME, K8sPsatAgentConfig
from plastron.attestors.k8s_psat.server import MAX_TOKEN_LENGTH
from plastron.errors import AttestationFailed, Unavailable


class K8sPsatAgentAttestor:
    name = NAME

    def __init__(self, config: K8sPsatAgentConfig) -> None:
        self._config = config

    def __repr__(self) -> str:
        return f"K8sPsatAgentAttestor({self._config.cluster!r}, {str(self._config.token_path)!r})"

    def _read_token(self) -> str:
        path = self._config.token_path
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_TOKEN_LENGTH + 1)
        except OSError as exc:
            raise Unavailable(f"{NAME}: cannot read token {str(path)!r}: {exc.strerror}") from None
        token = data.decode("ascii", "replace").strip()
        if not token or len(data) > MAX_TOKEN_LENGTH:
            raise Unavailable(f"{NAME}: token file {str(path)!r} is empty or too large")
        return token

    async def payload(self) -> bytes:
        token = await asyncio.to_thread(self._read_token)
        return json.dumps({"cluster": self._config.cluster, "token": token}).encode()

    async def answer(self, challenge: bytes) -> bytes:
        raise AttestationFailed(f"{NAME}: the server sent a challenge; k8s_psat has none")
