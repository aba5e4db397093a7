"""CA integration tests: real SoftHSM2 tokens (from softhsm-conf/) and, when present, SQLite."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(_ROOT / "softhsm-conf"))
