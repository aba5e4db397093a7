"""Fixtures for the transport tests."""

from __future__ import annotations

import pytest
from transport_pki import PkiCa, make_ca


@pytest.fixture(scope="session")
def ca() -> PkiCa:
    return make_ca()


@pytest.fixture(scope="session")
def other_ca() -> PkiCa:
    return make_ca()
