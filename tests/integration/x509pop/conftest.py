"""x509pop integration fixtures: the unit tests' PKI builder and the SoftHSM2 token fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_TESTS / "unit" / "attestors"))  # x509pop_pki
