"""``audit_log_enabled = true`` on a real server process: one audit line per admin call and per
attestation, naming the caller, the method, the request (no secrets) and the result."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.server.api.audit import summarize
from tests.e2e.conftest import PlastronServerProcess, server_config
from tests.processes import free_port

AUDIT = 'audit_log_enabled = true\n  log_format = "json"\n  log_file = "{base}/server.jsonl"'


@pytest.fixture
def audited_server() -> Iterator[PlastronServerProcess]:
    yield from _server(audit=True)


@pytest.fixture
def unaudited_server() -> Iterator[PlastronServerProcess]:
    yield from _server(audit=False)


def _server(*, audit: bool) -> Iterator[PlastronServerProcess]:
    base = Path(tempfile.mkdtemp(prefix="pl-aud-", dir="/tmp"))
    port = free_port()
    extra = AUDIT.format(base=base) if audit else ""
    server = PlastronServerProcess.in_dir(
        base, port, server_config(base, port, base / "api.sock", extra), log_name="stdout.log"
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _audit_lines(server: PlastronServerProcess) -> list[dict[str, Any]]:
    lines = (server.base / "server.jsonl").read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc.get("type") == "audit"]


def _one(lines: list[dict[str, Any]], method: str, status: str = "success") -> dict[str, Any]:
    found = [d for d in lines if d["method"] == method and d["status"] == status]
    assert len(found) == 1, (method, status, [(d["method"], d["status"]) for d in lines])
    doc = found[0]
    assert doc["msg"] == "API accessed" and doc["level"] == "info" and doc["request_id"]
    return doc


def _ok(out: Any) -> str:
    assert out.returncode == 0, out.stderr
    return str(out.stdout)


def test_admin_calls_and_attestation_are_audited(
    audited_server: PlastronServerProcess, tmp_path: Path
) -> None:
    run = audited_server.run_cli
    created = json.loads(
        _ok(
            run(
                "entry",
                "create",
                "-parentID",
                "spiffe://example.org/node",
                "-spiffeID",
                "spiffe://example.org/web",
                "-selector",
                "unix:uid:1000",
                "-output",
                "json",
            )
        )
    )
    entry_id = created["results"][0]["entry"]["id"]
    _ok(run("entry", "delete", "-entryID", entry_id))
    token = json.loads(_ok(run("token", "generate", "-ttl", "600", "-output", "json")))["value"]
    before_attestation = (audited_server.base / "server.jsonl").read_text()
    agent = audited_server.attest_join_token(token)
    agent_id = str(agent.spiffe_id)
    _ok(run("agent", "ban", "-spiffeID", agent_id))
    _ok(run("agent", "evict", "-spiffeID", agent_id))
    _ok(run("x509", "mint", "-spiffeID", "spiffe://example.org/minted"))
    pem = tmp_path / "other.pem"
    pem.write_bytes(
        audited_server.bundle_certificates()[0].public_bytes(serialization.Encoding.PEM)
    )
    _ok(run("bundle", "set", "-id", "spiffe://other.org", "-path", str(pem)))
    refused = run("agent", "evict", "-spiffeID", agent_id)  # already gone: an error line
    assert refused.returncode == 1

    assert token not in before_attestation  # the token is secret until it is used
    lines = _audit_lines(audited_server)
    me = os.getuid()
    for doc in lines:  # the admin socket: the caller's uid, pid and binary
        if doc["method"] != "AttestAgent":
            assert doc["caller_uid"] == me and doc["caller_pid"] > 0 and doc["caller_path"]
    create = _one(lines, "BatchCreateEntry")
    assert create["service"] == "spire.api.server.entry.v1.Entry"
    assert create["status_code"] == "OK"
    request = json.loads(create["request"])
    assert request["entries"][0]["spiffe_id"] == {"trust_domain": "example.org", "path": "/web"}
    assert request["entries"][0]["selectors"] == [{"type": "unix", "value": "uid:1000"}]
    assert json.loads(_one(lines, "BatchDeleteEntry")["request"]) == {"ids": [entry_id]}
    generate = _one(lines, "CreateJoinToken")
    assert json.loads(generate["request"]) == {"ttl": 600}

    attest = _one(lines, "AttestAgent")
    assert attest["caller_addr"].startswith("127.0.0.1:") and "caller_uid" not in attest
    assert attest["agent_id"] == agent_id and attest["attestation_type"] == "join_token"
    params = json.loads(attest["request"])["params"]
    assert params["data"] == {"type": "join_token", "payload": f"<{len(token)} bytes>"}
    assert json.loads(_one(lines, "BanAgent")["request"])["id"]["path"].endswith(token)
    assert _one(lines, "DeleteAgent")["status_code"] == "OK"
    failed = _one(lines, "DeleteAgent", "error")
    assert failed["status_code"] == "NOT_FOUND" and agent_id in failed["status_message"]
    mint = json.loads(_one(lines, "MintX509SVID")["request"])
    assert mint["csr"].endswith(" bytes>")  # the CSR as its length only
    bundle = json.loads(_one(lines, "BatchSetFederatedBundle")["request"])
    assert bundle["bundle"][0]["trust_domain"] == "other.org"
    assert bundle["bundle"][0]["x509_authorities"][0]["asn1"].endswith(" bytes>")


def test_a_caller_chosen_token_is_redacted_from_the_summary() -> None:
    request = agent_pb2.CreateJoinTokenRequest(ttl=60, token="caller-chosen-secret")
    assert summarize(request) == {"ttl": 60, "token": "[redacted]"}


def test_audit_is_off_by_default(unaudited_server: PlastronServerProcess) -> None:
    _ok(unaudited_server.run_cli("token", "generate"))
    assert "CreateJoinToken" not in unaudited_server.log()
