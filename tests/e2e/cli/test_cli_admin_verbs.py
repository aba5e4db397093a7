"""SPIRE's admin verbs through the real ``plastron-server`` CLI against a running server:
``entry delete -file``, ``agent purge``, ``debug getinfo``, and errors naming the socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.cli.test_cli_entries import _ok, _one_error_line


def _create_entries(server: Any, count: int) -> list[str]:
    ids = []
    for i in range(count):
        out = _ok(
            server.run_cli(
                "entry", "create",
                "-spiffeID", f"spiffe://example.org/del/{i}",
                "-parentID", "spiffe://example.org/host",
                "-selector", f"unix:uid:{1000 + i}",
                "-output", "json",
            )
        )  # fmt: skip
        ids.append(json.loads(out)["results"][0]["entry"]["id"])
    return ids


def _entry_count(server: Any) -> int:
    return int(json.loads(_ok(server.run_cli("entry", "count", "-output", "json")))["count"])


def test_entry_delete_file_deletes_every_listed_id(plastron_server: Any, tmp_path: Path) -> None:
    ids = _create_entries(plastron_server, 3)
    batch = tmp_path / "delete.json"
    batch.write_text(json.dumps({"ids": ids[:2]}))

    out = _ok(plastron_server.run_cli("entry", "delete", "-file", str(batch)))
    assert out.splitlines()[:2] == [f"Deleted entry with ID: {i}" for i in ids[:2]]
    assert "Deleted 2 entries successfully" in out
    assert _entry_count(plastron_server) == 1

    # stdin, JSON output (BatchDeleteEntryResponse), and a missing ID reported as a failure
    stdin = json.dumps({"ids": [ids[2], "no-such-entry"]}).encode()
    res = plastron_server.run_cli("entry", "delete", "-file", "-", "-output", "json", input=stdin)
    line = _one_error_line(res)
    assert "no-such-entry" in line and "NotFound" in line
    results = json.loads(res.stdout)["results"]
    assert [r["id"] for r in results] == [ids[2], "no-such-entry"]
    assert results[0]["status"]["code"] == 0
    assert _entry_count(plastron_server) == 0


def test_entry_delete_file_errors_name_the_file(plastron_server: Any, tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    assert str(missing) in _one_error_line(
        plastron_server.run_cli("entry", "delete", "-file", str(missing))
    )
    for text in ("{", '{"entries": []}', '{"ids": []}', '{"ids": [1]}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        assert str(bad) in _one_error_line(
            plastron_server.run_cli("entry", "delete", "-file", str(bad))
        ), text
    both = plastron_server.run_cli("entry", "delete", "-file", str(missing), "-entryID", "x")
    assert "cannot be combined" in _one_error_line(both)
