"""HSM integration tests: SoftHSM2 tokens from softhsm-conf/ (one dir per process)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT / "softhsm-conf"))
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))  # for tests.conformance

from softhsm_token import SoftHsmToken  # noqa: E402

from plastron.hsm.keymanager import Pkcs11KeyManager, create_pkcs11_key_manager  # noqa: E402
from plastron.spiffe.ids import TrustDomain  # noqa: E402

TD = TrustDomain("example.org")


@pytest.fixture
def manager(softhsm_token: SoftHsmToken) -> Iterator[Pkcs11KeyManager]:
    km = create_pkcs11_key_manager(softhsm_token.plugin_data(), trust_domain=TD, server_id="s1")
    yield km
    km.close()
