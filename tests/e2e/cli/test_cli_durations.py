"""Go-duration flags through the real CLI and server: ``x509 mint -ttl 1.5h`` mints a 90-minute
SVID, ``-ttl 500ms`` a one-second one (never the server's default), and ``-ttl 90`` (no unit) is
refused in one line, as SPIRE's Go flag is; ``token generate -ttl`` stays integer seconds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509


def _minted_lifetime(plastron_server: Any, tmp_path: Path, ttl: str) -> dt.timedelta:
    out = tmp_path / ttl
    out.mkdir()
    result = plastron_server.run_cli(
        "x509", "mint", "-spiffeID", "spiffe://example.org/d", "-ttl", ttl, "-write", str(out)
    )
    assert result.returncode == 0, result.stderr
    (leaf, *_) = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    return leaf.not_valid_after_utc - leaf.not_valid_before_utc


def test_mint_ttl_takes_go_durations(plastron_server: Any, tmp_path: Path) -> None:
    # the CA backdates notBefore by a few seconds: compare within that margin
    long = _minted_lifetime(plastron_server, tmp_path, "1.5h")
    assert dt.timedelta(minutes=90) <= long <= dt.timedelta(minutes=91)
    short = _minted_lifetime(plastron_server, tmp_path, "500ms")
    assert dt.timedelta(seconds=1) <= short <= dt.timedelta(minutes=1)


def test_bare_number_is_refused_for_duration_flags_only(plastron_server: Any) -> None:
    refused = plastron_server.run_cli(
        "x509", "mint", "-spiffeID", "spiffe://example.org/d", "-ttl", "90"
    )
    assert (refused.returncode, refused.stderr) == (
        1,
        "Error: -ttl: missing unit in duration '90' (write 90s, 90m or 90h)\n",
    )
    token = plastron_server.run_cli("token", "generate", "-ttl", "90")
    assert token.returncode == 0, token.stderr  # SPIRE's token -ttl is integer seconds
