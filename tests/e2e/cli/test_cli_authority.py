"""plastron-server localauthority / upstreamauthority against a real server process: SPIRE's
output for the whole X.509 rotation (show, prepare, activate, taint, revoke), JSON output, and
refusals as one stderr line with the server's code and message."""

from __future__ import annotations

import json
import re
from typing import Any


def _ok(result: Any) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"
    return str(result.stdout)


def _one_error_line(result: Any) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return str(lines[0])


def _authority_ids(text: str) -> list[str]:
    return re.findall(r"Authority ID: ([0-9a-f]+)", text)


def test_x509_rotation_through_the_cli(plastron_server: Any) -> None:
    cli = plastron_server.run_cli
    shown = _ok(cli("localauthority", "x509", "show"))
    assert shown.startswith("Active X.509 authority:\n  Authority ID: ")
    assert "  Upstream authority ID: No upstream authority\n" in shown
    assert "Prepared X.509 authority:\n  No prepared X.509 authority found\n" in shown
    assert shown.endswith("Old X.509 authority:\n  No old X.509 authority found\n")
    [first] = _authority_ids(shown)

    line = _one_error_line(cli("localauthority", "x509", "activate"))
    assert line == "Error: an authority ID is required"
    line = _one_error_line(cli("localauthority", "x509", "activate", "-authorityID", first))
    assert line.startswith(
        "Error: could not activate X.509 authority: rpc error: code = InvalidArgument desc = "
        "unexpected authority ID"
    ), line

    prepared = _ok(cli("localauthority", "x509", "prepare"))
    assert prepared.startswith("Prepared X.509 authority:\n  Authority ID: ")
    assert re.search(r"Expires at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", prepared)
    [second] = _authority_ids(prepared)
    activated = _ok(cli("localauthority", "x509", "activate", "-authorityID", second))
    assert activated.startswith(f"Activated X.509 authority:\n  Authority ID: {second}\n")

    line = _one_error_line(cli("localauthority", "x509", "taint", "-authorityID", second))
    assert "code = InvalidArgument" in line and "unable to taint current" in line, line
    line = _one_error_line(cli("localauthority", "x509", "revoke", "-authorityID", first))
    assert "code = FailedPrecondition" in line and "untainted" in line, line

    tainted = _ok(cli("localauthority", "x509", "taint", "-authorityID", first))
    assert tainted.startswith(f"Tainted X.509 authority:\n  Authority ID: {first}\n")
    state = json.loads(_ok(cli("localauthority", "x509", "show", "-output", "json")))
    assert state["active"]["authority_id"] == second and state["old"]["authority_id"] == first
    revoked = _ok(cli("localauthority", "x509", "revoke", "-authorityID", first))
    assert revoked.startswith(f"Revoked X.509 authority:\n  Authority ID: {first}\n")
    assert first not in _ok(cli("localauthority", "x509", "show"))


def test_jwt_show_and_upstream_without_upstream(plastron_server: Any) -> None:
    cli = plastron_server.run_cli
    shown = _ok(cli("localauthority", "jwt", "show"))
    assert shown.startswith("Active JWT authority:\n  Authority ID: ")
    assert "Upstream" not in shown
    line = _one_error_line(cli("upstreamauthority", "taint", "-subjectKeyID", "ab"))
    assert line == (
        "Error: could not taint X.509 upstream authority: rpc error: code = FailedPrecondition "
        "desc = upstream authority is not configured"
    )
