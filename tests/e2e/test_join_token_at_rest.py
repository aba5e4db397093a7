"""A real server: a join token ``token generate`` prints once is nowhere in the datastore (a
dump, or the raw database, -wal and -shm bytes), with or without a node alias, and still
attests exactly once; the alias entry appears when the token is used."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError


def _dump(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _generate(server: Any, *flags: str) -> str:
    out = server.run_cli("token", "generate", "-ttl", "600", *flags)
    assert out.returncode == 0, out.stderr
    return str(out.stdout.split("Token: ", 1)[1].split()[0])


def test_generated_tokens_are_not_stored_and_attest_once(plastron_server: Any) -> None:
    plain = _generate(plastron_server)
    aliased = _generate(plastron_server, "-spiffeID", "spiffe://example.org/node")
    db = plastron_server.data_dir / "datastore.sqlite3"
    dump = _dump(db)
    assert dump.count('INSERT INTO "join_tokens"') == 2
    for token in (plain, aliased):
        assert token not in dump
        for name in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if name.exists():
                assert token.encode() not in name.read_bytes(), name
    assert "spiffe://example.org/node" in dump  # the alias waits with its token
    for token in (plain, aliased):
        agent = plastron_server.attest_join_token(token)
        assert agent.spiffe_id.path == f"/spire/agent/join_token/{token}"
        with pytest.raises(GRPCError) as err:
            plastron_server.attest_join_token(token)  # single use
        assert err.value.status == Status.PERMISSION_DENIED
    shown = plastron_server.run_cli("entry", "show", "-spiffeID", "spiffe://example.org/node")
    assert shown.returncode == 0, shown.stderr
    assert f"spiffe://example.org/spire/agent/join_token/{aliased}" in shown.stdout
