"""``plastron-server x509 mint`` / ``jwt mint`` against a real server: no SVID for the server's
ID, an agent's, anything under /spire, or a trust domain ID; one error line, exit 1, nothing
written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("spiffe_id", "why"),
    [
        ("spiffe://example.org/spire/server", "reserved /spire namespace"),
        ("spiffe://example.org/spire/agent/join_token/t", "reserved /spire namespace"),
        ("spiffe://example.org/spire", "reserved /spire namespace"),
        ("spiffe://example.org", "has no path"),
    ],
)
def test_mint_refuses_reserved_ids(
    plastron_server: Any, tmp_path: Path, spiffe_id: str, why: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    runs = [
        plastron_server.run_cli("x509", "mint", "-spiffeID", spiffe_id, "-write", str(out)),
        plastron_server.run_cli("jwt", "mint", "-spiffeID", spiffe_id, "-audience", "a"),
    ]
    for result in runs:
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert "unable to mint SVID" in line and spiffe_id in line and why in line, line
        assert result.stdout == ""
    assert list(out.iterdir()) == []
