"""Puts swtpm-tests/ on sys.path and exposes its fixtures to the TPM integration tests."""

from __future__ import annotations

import sys
from pathlib import Path

_SWTPM_TESTS = Path(__file__).resolve().parents[3] / "swtpm-tests"
if str(_SWTPM_TESTS) not in sys.path:
    sys.path.insert(0, str(_SWTPM_TESTS))

from swtpm_fixtures import manufacturer_ca, swtpm, swtpm_template  # noqa: E402

__all__ = ["manufacturer_ca", "swtpm", "swtpm_template"]
