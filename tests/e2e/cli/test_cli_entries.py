"""plastron-server token/entry verbs against a real server process."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ENTRY_ID = re.compile(r"^Entry ID\s+: (\S+)$", re.M)


def _ok(result: Any) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"
    assert result.stderr == ""
    return str(result.stdout)


def _one_error_line(result: Any) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.stderr
    return str(lines[0])


def _count(server: Any, *filters: str) -> int:
    out = _ok(server.run_cli("entry", "count", "-output", "json", *filters))
    return int(json.loads(out)["count"])


def test_token_generate_pretty_json_and_alias_entry(plastron_server: Any) -> None:
    out = _ok(plastron_server.run_cli("token", "generate"))
    assert re.match(r"^Token: [0-9a-f-]{36}\nWarning: Missing SPIFFE ID.\n$", out), out

    out = _ok(
        plastron_server.run_cli(
            "token",
            "generate",
            "-spiffeID",
            "spiffe://example.org/host",
            "-ttl",
            "60",
            "-output",
            "json",
        )
    )
    doc = json.loads(out)
    token = doc["value"]
    assert int(doc["expires_at"]) > 0
    # -spiffeID makes the server add a node alias entry parented by the token's agent ID, when
    # the token is used (its parent ID contains the token: not stored before that).
    parent = f"spiffe://example.org/spire/agent/join_token/{token}"
    shown = _ok(plastron_server.run_cli("entry", "show", "-parentID", parent))
    assert "Found 0 entries\n" in shown
    plastron_server.attest_join_token(token)
    shown = _ok(plastron_server.run_cli("entry", "show", "-parentID", parent))
    assert "Found 1 entry\n" in shown
    assert "SPIFFE ID               : spiffe://example.org/host\n" in shown
    assert f"Selector                : spiffe_id:{parent}\n" in shown

    bad = plastron_server.run_cli("token", "generate", "-spiffeID", "example.org/host")
    assert "-spiffeID" in _one_error_line(bad)
    assert _one_error_line(plastron_server.run_cli("token", "generate", "-ttl", "0"))


def test_entry_create_show_update_delete(plastron_server: Any) -> None:
    run = plastron_server.run_cli
    out = _ok(
        run(
            "entry", "create",
            "-spiffeID", "spiffe://example.org/web",
            "-parentID", "spiffe://example.org/host",
            "-selector", "unix:uid:1000",
            "-selector", "unix:gid:50",
            "-dns", "web.example.org",
            "-x509SVIDTTL", "120",
            "-hint", "frontend",
            "-admin",
        )
    )  # fmt: skip
    assert "SPIFFE ID               : spiffe://example.org/web\n" in out
    assert "Parent ID               : spiffe://example.org/host\n" in out
    assert "X509-SVID TTL           : 120\n" in out
    assert "JWT-SVID TTL            : default\n" in out
    assert "Selector                : unix:uid:1000\n" in out
    assert "DNS name                : web.example.org\n" in out
    assert "Admin                   : true\n" in out
    assert "Hint                    : frontend\n" in out
    m = ENTRY_ID.search(out)
    assert m
    web_id = m.group(1)

    # -node: the parent is the server's ID in the SPIFFE ID's trust domain.
    node = _ok(
        run("entry", "create", "-node", "-spiffeID", "spiffe://example.org/nodes", "-selector",
            "join_token:any", "-entryID", "node-entry-1", "-downstream")
    )  # fmt: skip
    assert "Entry ID                : node-entry-1\n" in node
    assert "Parent ID               : spiffe://example.org/spire/server\n" in node
    assert "Downstream              : true\n" in node

    assert _count(plastron_server) == 2
    assert _count(plastron_server, "-spiffeID", "spiffe://example.org/web") == 1
    assert _count(plastron_server, "-parentID", "spiffe://example.org/spire/server") == 1
    assert _count(plastron_server, "-selector", "unix:uid:1000") == 1
    assert _count(plastron_server, "-selector", "unix:uid:1000", "-matchSelectorsOn", "exact") == 0
    assert _count(plastron_server, "-selector", "unix:uid:1000", "-selector", "unix:gid:50",
                  "-matchSelectorsOn", "exact") == 1  # fmt: skip
    assert _count(plastron_server, "-hint", "frontend") == 1
    assert _count(plastron_server, "-downstream") == 1
    pretty = _ok(run("entry", "count"))
    assert pretty == "2 registration entries\n"

    shown = _ok(run("entry", "show", "-entryID", web_id))
    assert shown.startswith("Found 1 entry\n")
    assert f"Entry ID                : {web_id}\n" in shown
    listed = json.loads(_ok(run("entry", "show", "-output", "json")))
    assert sorted(e["id"] for e in listed["entries"]) == sorted([web_id, "node-entry-1"])
    web = next(e for e in listed["entries"] if e["id"] == web_id)
    assert web["spiffe_id"] == {"trust_domain": "example.org", "path": "/web"}
    assert web["x509_svid_ttl"] == 120

    both = _ok(run("entry", "show", "-selector", "unix:uid:1000", "-matchSelectorsOn", "any"))
    assert both.startswith("Found 1 entry\n")
    combined = run("entry", "show", "-entryID", web_id, "-spiffeID", "spiffe://example.org/web")
    assert "can't be combined" in _one_error_line(combined)

    updated = _ok(
        run("entry", "update", "-entryID", web_id, "-spiffeID", "spiffe://example.org/web2",
            "-parentID", "spiffe://example.org/host", "-selector", "unix:uid:2000",
            "-jwtSVIDTTL", "30")
    )  # fmt: skip
    assert "SPIFFE ID               : spiffe://example.org/web2\n" in updated
    assert "JWT-SVID TTL            : 30\n" in updated
    assert "Selector                : unix:uid:2000\n" in updated
    assert "unix:uid:1000" not in updated
    rev = json.loads(_ok(run("entry", "show", "-entryID", web_id, "-output", "json")))
    assert int(rev["entries"][0]["revision_number"]) >= 1

    deleted = _ok(run("entry", "delete", "-entryID", web_id))
    assert f"Deleted entry with ID: {web_id}\n" in deleted
    assert _count(plastron_server) == 1
    again = _one_error_line(run("entry", "delete", "-entryID", web_id))
    assert web_id in again and "NotFound" in again
    missing = _one_error_line(run("entry", "show", "-entryID", web_id))
    assert "code = NotFound" in missing
    assert _count(plastron_server) == 1


BAD_CREATES = {
    "bad SPIFFE ID": ["-spiffeID", "example.org/web", "-parentID", "spiffe://example.org/h",
                      "-selector", "unix:uid:1"],
    "uppercase scheme": ["-spiffeID", "SPIFFE://example.org/web", "-parentID",
                         "spiffe://example.org/h", "-selector", "unix:uid:1"],
    "bad parent ID": ["-spiffeID", "spiffe://example.org/web", "-parentID", "spiffe://exa mple",
                      "-selector", "unix:uid:1"],
    "foreign trust domain": ["-spiffeID", "spiffe://other.org/web", "-parentID",
                             "spiffe://example.org/h", "-selector", "unix:uid:1"],
    "reserved /spire/ path": ["-spiffeID", "spiffe://example.org/spire/agent/x", "-parentID",
                              "spiffe://example.org/h", "-selector", "unix:uid:1"],
    "no selectors": ["-spiffeID", "spiffe://example.org/web", "-parentID",
                     "spiffe://example.org/h"],
    "unparsable selector": ["-spiffeID", "spiffe://example.org/web", "-parentID",
                            "spiffe://example.org/h", "-selector", "unix"],
    "empty selector value": ["-spiffeID", "spiffe://example.org/web", "-parentID",
                             "spiffe://example.org/h", "-selector", "unix:"],
    "no parent": ["-spiffeID", "spiffe://example.org/web", "-selector", "unix:uid:1"],
    "node federates": ["-node", "-spiffeID", "spiffe://example.org/web", "-selector", "a:b",
                       "-federatesWith", "spiffe://other.org"],
    "negative TTL": ["-spiffeID", "spiffe://example.org/web", "-parentID",
                     "spiffe://example.org/h", "-selector", "unix:uid:1", "-x509SVIDTTL", "-5"],
    "unknown federated bundle": ["-spiffeID", "spiffe://example.org/web", "-parentID",
                                 "spiffe://example.org/h", "-selector", "unix:uid:1",
                                 "-federatesWith", "spiffe://nowhere.org"],
    "unknown flag": ["-spiffeID", "spiffe://example.org/web", "-bogus"],
}  # fmt: skip


def test_entry_create_rejects_bad_input_and_writes_nothing(plastron_server: Any) -> None:
    for name, args in BAD_CREATES.items():
        result = plastron_server.run_cli("entry", "create", *args)
        line = _one_error_line(result)
        assert result.stdout == "", (name, result.stdout)
        assert len(line) < 500, name
    assert _count(plastron_server) == 0
    reserved = plastron_server.run_cli("entry", "create", *BAD_CREATES["reserved /spire/ path"])
    assert "InvalidArgument" in reserved.stderr


def test_entry_create_from_data_file_and_stdin(plastron_server: Any, tmp_path: Path) -> None:
    doc = {
        "entries": [
            {"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/h",
             "selectors": [{"type": "unix", "value": "uid:1"}], "x509_svid_ttl": 60},
            {"spiffe_id": "spiffe://example.org/b", "parent_id": "spiffe://example.org/h",
             "selectors": [{"type": "unix", "value": "uid:2"}], "dns_names": ["b.example.org"],
             "entry_id": "entry-b"},
        ]
    }  # fmt: skip
    path = tmp_path / "entries.json"
    path.write_text(json.dumps(doc))
    out = _ok(plastron_server.run_cli("entry", "create", "-data", str(path)))
    assert out.count("Entry ID") == 2
    assert "Entry ID                : entry-b\n" in out
    stdin_entry = {"spiffe_id": "spiffe://example.org/c", "parent_id": "spiffe://example.org/h",
                   "selectors": [{"type": "k8s", "value": "ns:x"}]}  # fmt: skip
    stdin_doc = {"entries": [stdin_entry]}
    out = _ok(
        plastron_server.run_cli(
            "entry", "create", "-data", "-", input=json.dumps(stdin_doc).encode()
        )
    )
    assert "spiffe://example.org/c" in out
    assert _count(plastron_server) == 3

    # A duplicate of an existing entry fails on the server: one line, exit 1.
    dup = plastron_server.run_cli("entry", "create", "-data", str(path))
    assert "AlreadyExists" in _one_error_line(dup)
    bad = tmp_path / "bad.json"
    bad.write_text('{"entries": [{"spiffe_id": "spiffe://example.org/d", "colour": "red"}]}')
    assert "colour" in _one_error_line(
        plastron_server.run_cli("entry", "create", "-data", str(bad))
    )
    bad.write_text("{not json")
    assert "JSON" in _one_error_line(plastron_server.run_cli("entry", "create", "-data", str(bad)))
    assert _count(plastron_server) == 3
