"""The pages' admin commands, run as written against one server on the default admin socket:
entries (agentless.md, sds.md, nested.md), the CA rotation by hand and the SQLite backup
(operations.md), federation bootstrapping (federation.md), and the coming-from-spire.md steps
that talk to a server, and its step 4 check of a workload through an agent moved to Plastron.
tests/docs/doc_shell.py says how the blocks run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.doc_blocks import Block, blocks_tested_by
from tests.docs.doc_shell import SERVER_CONF, needs_namespaces, run_page, start_server
from tests.processes import free_port

pytestmark = needs_namespaces

# operations.md writes NEW and OLD for the IDs `localauthority x509 show` prints.
AUTHORITY_ID = """authority_id() {
  plastron-server localauthority x509 show |
    awk -v s="$1" '$0 ~ "^"s" X.509 authority:" {f=1; next} f && /Authority ID:/ {print $3; exit}'
}"""
# coming-from-spire.md's SPIRE side: a second Plastron server stands in for spire-server, whose
# CLI has the same verbs and flags. The page migrates example.org's workloads to new.example.org.
SPIRE_CONF = SERVER_CONF.replace("/var/lib/plastron", "/tmp/plastron/spire/data").replace(
    "bind_port    = PORT", 'bind_port = SPIRE_PORT\n  socket_path = "/tmp/plastron/spire/api.sock"'
)
SPIRE_STAND_IN = f"""mkdir -p /tmp/plastron/spire && cat > /tmp/plastron/spire/server.conf <<'CONF'
{SPIRE_CONF}CONF
plastron-server run -config /tmp/plastron/spire/server.conf > spire.log 2>&1 &
spire-server() {{ plastron-server "$@" -socketPath /tmp/plastron/spire/api.sock; }}
for i in $(seq 600); do spire-server healthcheck >/dev/null 2>&1 && break; sleep 0.1; done"""


# coming-from-spire.md's step 4: an agent moved to Plastron, serving the socket workloads
# already use, attested with a join token; this shell's uid is a registered workload.
AGENT_SOCKET = "/run/plastron-agent/api.sock"
MOVED_AGENT = f"""TOKEN=$(plastron-server token generate -spiffeID spiffe://new.example.org/node |
  awk '/^Token:/ {{print $2}}')
plastron-server entry create -parentID spiffe://new.example.org/node \\
  -spiffeID spiffe://new.example.org/web -selector unix:uid:$(id -u) > /dev/null
plastron-server bundle show > /etc/plastron/bundle.pem
cat > /etc/plastron/agent.conf <<'CONF'
agent {{
  trust_domain      = "new.example.org"
  server_address    = "127.0.0.1"
  server_port       = SERVER_PORT
  data_dir          = "/var/lib/plastron-agent"
  trust_bundle_path = "/etc/plastron/bundle.pem"
  socket_path       = "{AGENT_SOCKET}"
}}
plugins {{
  KeyManager "memory"       {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  WorkloadAttestor "unix"   {{ plugin_data {{}} }}
}}
CONF
plastron-agent run -config /etc/plastron/agent.conf -joinToken "$TOKEN" > agent.log 2>&1 &
fetch() {{ plastron-agent api fetch x509 -socketPath {AGENT_SOCKET} -silent 2>/dev/null; }}
ready=
for i in $(seq 600); do fetch && ready=1 && break; sleep 0.1; done
[ -n "$ready" ] || {{ cat agent.log; exit 1; }}"""


def _with_authority_ids(block: Block) -> Block:
    text = block.text.replace("-authorityID NEW", '-authorityID "$(authority_id Prepared)"')
    text = text.replace("-authorityID OLD", '-authorityID "$(authority_id Old)"')
    return Block(block.page, block.line, block.lang, text, block.marker)


def test_admin_blocks_run_against_one_server(tmp_path: Path) -> None:
    blocks = blocks_tested_by(__file__, "test_admin_blocks_run_against_one_server")
    run = run_page(
        tmp_path,
        [
            start_server(free_port()),
            AUTHORITY_ID,
            *(_with_authority_ids(b) for b in blocks),
            'plastron-server entry show -output json > "$RESULTS/entries.json"',
            'plastron-server localauthority x509 show > "$RESULTS/authorities.txt"',
            'plastron-server bundle list -format spiffe > "$RESULTS/federated.txt"',
            'plastron-server federation list > "$RESULTS/relationships.txt"',
            'cp /var/backups/plastron/datastore.sqlite3 "$RESULTS/"',
        ],
    )
    assert run.returncode == 0, run.failure()
    assert "Traceback" not in run.stdout + run.stderr, run.failure()
    out = tmp_path / "results"
    entries = (out / "entries.json").read_text()
    for path in (
        "/lambda/billing",
        "/lambda/payments",
        "/billing/api",
        "/frontend",
        "/downstream/east",
    ):
        assert f'"{path}"' in entries, path
    assert "No old X.509 authority found" in (out / "authorities.txt").read_text()
    assert "beta.test" in (out / "federated.txt").read_text()
    assert "beta.example.net" in (out / "relationships.txt").read_text()
    backup = sqlite3.connect(out / "datastore.sqlite3")
    assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_coming_from_spire_blocks(tmp_path: Path) -> None:
    blocks = blocks_tested_by(__file__, "test_coming_from_spire_blocks")
    port = free_port()
    # the agent starts before the step that checks a workload through it
    steps = [
        MOVED_AGENT.replace("SERVER_PORT", str(port)) if AGENT_SOCKET in b.text else ""
        for b in blocks
    ]
    run = run_page(
        tmp_path,
        [
            start_server(port, SERVER_CONF.replace('"example.org"', '"new.example.org"')),
            SPIRE_STAND_IN.replace("SPIRE_PORT", str(free_port())),
            *(step for pair in zip(steps, blocks, strict=True) for step in pair),
            'plastron-server bundle list -format spiffe > "$RESULTS/bundles.txt"',
            'spire-server bundle list -format spiffe >> "$RESULTS/bundles.txt"',
        ],
    )
    assert run.returncode == 0, run.failure()
    assert "Traceback" not in run.stdout + run.stderr, run.failure()
    bundles = (tmp_path / "results" / "bundles.txt").read_text()
    # each side holds the other's bundle as a federated one
    assert "* example.org\n" in bundles and "* new.example.org\n" in bundles, bundles
    workload_check = next(b for b in blocks if AGENT_SOCKET in b.text)
    checked = run.output_of(workload_check)
    assert "spiffe://new.example.org/web" in checked, checked
    assert "spiffe://new.example.org/spire/agent/join_token/" in checked, checked


def _database_reachable(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    done = subprocess.run(command, capture_output=True, timeout=30, check=False, env=DB_ENV)
    return done.returncode == 0


DB_ENV = {**os.environ, "PGHOST": "127.0.0.1", "PGUSER": "postgres", "MYSQL_HOST": "127.0.0.1"}
PSQL = ["psql", "-q", "-d", "postgres", "-c"]
MARIADB = ["mariadb", "-u", "root", "-e"]


@pytest.fixture
def plastron_databases() -> Iterator[None]:
    """The database the backup blocks name, "plastron", in the CI's PostgreSQL and MariaDB."""
    reachable = _database_reachable([*PSQL, "SELECT 1"]) and _database_reachable(
        [*MARIADB, "SELECT 1"]
    )
    if not reachable:
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL or MariaDB on 127.0.0.1 is not reachable")
        pytest.skip("PostgreSQL or MariaDB on 127.0.0.1 is not reachable")
    for command in ([*PSQL, "CREATE DATABASE plastron"], [*MARIADB, "CREATE DATABASE plastron"]):
        subprocess.run(command, check=True, timeout=30, env=DB_ENV, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*PSQL, "DROP DATABASE plastron"], timeout=30, env=DB_ENV, check=False)
        subprocess.run([*MARIADB, "DROP DATABASE plastron"], timeout=30, env=DB_ENV, check=False)


def test_database_backup_blocks(tmp_path: Path, plastron_databases: None) -> None:
    blocks = blocks_tested_by(__file__, "test_database_backup_blocks")
    run = run_page(
        tmp_path,
        [
            "mkdir -p /var/backups/plastron",
            # the MariaDB clients read the server's address from ~/.my.cnf (its socket is the
            # host's, not this namespace's)
            "export HOME=$PWD && printf '[client]\\nhost=127.0.0.1\\nprotocol=tcp\\n' > .my.cnf",
            *blocks,
            'cp /var/backups/plastron/plastron.* "$RESULTS/"',
        ],
        env={"PGHOST": "127.0.0.1", "PGUSER": "postgres"},
    )
    assert run.returncode == 0, run.failure()
    assert (tmp_path / "results" / "plastron.dump").read_bytes().startswith(b"PGDMP")
    assert "-- MariaDB dump" in (tmp_path / "results" / "plastron.sql").read_text()
