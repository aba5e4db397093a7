"""The OIDC discovery documents on the token exchange's listener, when the server has a
``jwt_issuer``: a relying party given that issuer finds ``<issuer>/.well-known/openid-
configuration`` and the JWKS of the trust domain's JWT authorities at ``<issuer>/keys``, with
no separate ``plastron-oidc-discovery`` to run. The issuer is fixed by config, so no Host
header is trusted for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from plastron.clock import Clock
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.oidc import KEYS_PATH, WELL_KNOWN_PATH, discovery_document, jwks_document


class OidcDocuments:
    def __init__(self, issuer: str, bundle: Callable[[], Bundle | None], clock: Clock) -> None:
        prefix = urlsplit(issuer).path.rstrip("/") + "/"
        self._issuer = issuer
        self._jwks_uri = issuer.rstrip("/") + "/" + KEYS_PATH
        self._bundle = bundle
        self._clock = clock
        self.well_known_path = prefix + WELL_KNOWN_PATH
        self.keys_path = prefix + KEYS_PATH

    def serves(self, path: str) -> bool:
        return path in (self.well_known_path, self.keys_path)

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == self.well_known_path:
            return 200, discovery_document(self._issuer, self._jwks_uri)
        bundle = self._bundle()
        if bundle is None:
            return 503, {"error": "temporarily_unavailable", "error_description": "no bundle yet"}
        return 200, jwks_document(bundle, self._clock.now())
