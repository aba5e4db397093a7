"""Fixtures for the SPIFFE credential tests (helpers live in spiffe_pki.py)."""

from __future__ import annotations

import pytest
from spiffe_pki import KEY_MAKERS, Pki, make_pki

_PKI_CACHE: dict[str, Pki] = {}


@pytest.fixture(params=sorted(KEY_MAKERS))
def pki(request: pytest.FixtureRequest) -> Pki:
    kind = request.param
    if kind not in _PKI_CACHE:  # RSA key generation is slow; one PKI per key type per run
        _PKI_CACHE[kind] = make_pki(kind)
    return _PKI_CACHE[kind]


@pytest.fixture(scope="session")
def ec_pki() -> Pki:
    return make_pki("ec-p256")
