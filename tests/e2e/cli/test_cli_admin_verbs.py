"""SPIRE's admin verbs through the real ``plastron-server`` CLI against a running server:
``entry delete -file``, ``agent purge``, ``debug getinfo``, and errors naming the socket."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from plastron.clock import SystemClock
from plastron.records import AttestedNode
from plastron.server.cli.debug import go_seconds
from plastron.server.datastore.config import SqlConfig
from plastron.server.datastore.store import open_datastore
from plastron.spiffe.ids import SpiffeId
from tests.e2e.cli.test_cli_entries import _ok, _one_error_line

DAY = 86400


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


def _seed_agents(server: Any, now: int) -> None:
    """Agent records as a server holds them after attestation, written into the running
    server's own SQLite datastore (no agent process can be made to have expired days ago)."""

    async def seed() -> None:
        config = SqlConfig(
            database_type="sqlite3", connection_string=str(server.data_dir / "datastore.sqlite3")
        )
        store = await open_datastore(config, clock=SystemClock())
        try:
            for name, kind, serial, expired_ago, reattest in (
                ("stale", "x509pop", "1", 2 * DAY, True),
                ("recent", "x509pop", "2", 3600, True),
                ("token", "join_token", "3", 3 * DAY, False),
                ("banned", "x509pop", "", 3 * DAY, True),
            ):
                await store.create_attested_node(
                    AttestedNode(
                        spiffe_id=SpiffeId.parse(f"spiffe://example.org/spire/agent/{kind}/{name}"),
                        attestation_type=kind,
                        cert_serial=serial,
                        cert_not_after=now - expired_ago,
                        can_reattest=reattest,
                    )
                )
        finally:
            await store.close()

    asyncio.run(seed())


def _agent_ids(server: Any) -> set[str]:
    doc = json.loads(_ok(server.run_cli("agent", "list", "-output", "json")))
    return {f"spiffe://{a['id']['trust_domain']}{a['id']['path']}" for a in doc["agents"]}


def test_agent_purge_dry_run_then_purge(plastron_server: Any) -> None:
    now = int(time.time())
    _seed_agents(plastron_server, now)
    stale = "spiffe://example.org/spire/agent/x509pop/stale"
    recent = "spiffe://example.org/spire/agent/x509pop/recent"
    before = _agent_ids(plastron_server)
    assert len(before) == 4

    dry = _ok(plastron_server.run_cli("agent", "purge", "-dryRun"))
    assert dry == (
        f"Found 1 expired agent\n\n\nAgents that can be purged:\nSPIFFE ID         : {stale}\n"
    )
    dry_json = json.loads(
        _ok(plastron_server.run_cli("agent", "purge", "-dryRun", "-output", "json"))
    )
    assert dry_json == {"expired_agents": [{"agent_id": stale, "deleted": False}]}
    assert _agent_ids(plastron_server) == before

    out = _ok(plastron_server.run_cli("agent", "purge"))
    assert out == f"Found 1 expired agent\n\nAgents purged:\nSPIFFE ID         : {stale}\n"
    assert _agent_ids(plastron_server) == before - {stale}

    # A shorter -expiredFor (Go duration) reaches the agent that expired an hour ago.
    doc = json.loads(
        _ok(plastron_server.run_cli("agent", "purge", "-expiredFor", "30m", "-output", "json"))
    )
    assert doc == {"expired_agents": [{"agent_id": recent, "deleted": True}]}
    assert _ok(plastron_server.run_cli("agent", "purge", "-expiredFor", "1s")) == (
        "No agents to purge.\n"
    )
    assert "-expiredFor" in _one_error_line(
        plastron_server.run_cli("agent", "purge", "-expiredFor", "90")
    )


def test_agent_purge_keeps_banned_and_join_token_agents(plastron_server: Any) -> None:
    """Purging a banned record would lift the ban and let the banned credential re-attest;
    a join-token agent cannot re-attest, so its record is never purged."""
    _seed_agents(plastron_server, int(time.time()))
    _ok(plastron_server.run_cli("agent", "purge", "-expiredFor", "1s"))
    assert _agent_ids(plastron_server) == {
        "spiffe://example.org/spire/agent/x509pop/banned",
        "spiffe://example.org/spire/agent/join_token/token",
    }


def test_debug_getinfo_pretty_and_json(plastron_server: Any) -> None:
    _create_entries(plastron_server, 2)
    out = _ok(plastron_server.run_cli("debug", "getinfo"))
    lines = out.splitlines()
    assert lines[0] == "Server Debug Info:"
    assert re.fullmatch(r"  Uptime:                  (\d+h)?(\d+m)?\d+s", lines[1]), lines[1]
    assert lines[2:5] == [
        "  Registered Agents:       0",
        "  Registration Entries:    2",
        "  Federated Bundles:       0",
    ]
    assert lines[5] == "  SVID Chain:"
    assert lines[6] == "    [0] SPIFFE ID:  spiffe://example.org/spire/server"
    assert re.fullmatch(r"        Expires At: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[8]), lines[8]

    doc = json.loads(_ok(plastron_server.run_cli("debug", "getinfo", "-output", "json")))
    assert doc["entries_count"] == 2 and doc["agents_count"] == 0
    assert doc["federated_bundles_count"] == 0
    assert doc["svid_chain"][0]["id"] == {"trust_domain": "example.org", "path": "/spire/server"}


def test_go_seconds_is_go_duration_string() -> None:
    assert [go_seconds(s) for s in (0, 45, 60, 3600, 3723)] == [
        "0s", "45s", "1m0s", "1h0m0s", "1h2m3s"
    ]  # fmt: skip


def test_missing_admin_socket_error_names_the_socket(plastron_server: Any) -> None:
    missing = str(plastron_server.base / "nowhere.sock")
    for argv in (("debug", "getinfo"), ("agent", "purge"), ("entry", "delete", "-entryID", "x")):
        line = _one_error_line(plastron_server.run_cli(*argv, "-socketPath", missing))
        assert missing in line and "connection error" in line, line
