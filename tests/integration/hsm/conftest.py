"""HSM integration tests: SoftHSM2 tokens from softhsm-conf/ (one dir per process)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "softhsm-conf"))

from softhsm_token import SoftHsmToken, softhsm_dir, softhsm_token  # noqa: F401

from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager
from plastron.spiffe.ids import TrustDomain

TD = TrustDomain("example.org")


@pytest.fixture
def manager(softhsm_token: SoftHsmToken) -> Iterator[Pkcs11KeyManager]:  # noqa: F811
    km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    yield km
    km.close()
