"""docs/coming-from-spire.md, step 3: the documented ``jq`` program turns ``entry show -output
json`` into an ``entry create -data`` file, and the entries arrive whole on another server.

A Plastron server stands in for the SPIRE one: its ``-output json`` is the same protojson of
``ListEntriesResponse``. The program is read from the page itself, so a page that drifts fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.doc_blocks import block_tested_by
from tests.e2e.conftest import PlastronServerProcess, server_config
from tests.processes import free_port

JQ = shutil.which("jq")
COMPARED = (
    "id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl",
    "federates_with", "dns_names", "admin", "downstream", "hint", "expires_at",
)  # fmt: skip

pytestmark = pytest.mark.skipif(JQ is None, reason="jq is not installed")


def documented_jq_program() -> str:
    """The argument of ``jq`` in the page's ``entry show -output json | jq '…'`` block."""
    block = block_tested_by(__file__, "test_documented_conversion_copies_entries_between_servers")
    match = re.search(r"entry show -output json \| jq '(.*?)' > entries\.json", block.text, re.S)
    assert match, "coming-from-spire.md no longer shows the entry conversion"
    return match.group(1)


@pytest.fixture
def second_server() -> Iterator[PlastronServerProcess]:
    base = Path("/tmp") / f"pl-mig-{free_port()}"  # short: Unix socket path limit
    base.mkdir()
    port = free_port()
    server = PlastronServerProcess.in_dir(
        base, port, server_config(base, port, base / "api.sock"), env={}
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _entries(server: PlastronServerProcess) -> list[dict[str, object]]:
    shown = server.run_cli("entry", "show", "-output", "json")
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)["entries"]
    return sorted(({k: e[k] for k in COMPARED} for e in entries), key=lambda e: str(e["id"]))


def test_documented_conversion_copies_entries_between_servers(
    plastron_server: PlastronServerProcess, second_server: PlastronServerProcess, tmp_path: Path
) -> None:
    for args in (
        ("-node", "-spiffeID", "spiffe://example.org/node-1", "-selector", "x509pop:subject:cn:n1"),
        (
            "-parentID", "spiffe://example.org/node-1", "-spiffeID", "spiffe://example.org/web",
            "-selector", "unix:uid:1000", "-selector", "unix:gid:1000", "-dns", "web.example.org",
            "-x509SVIDTTL", "600", "-jwtSVIDTTL", "300", "-hint", "web", "-admin",
            "-entryExpiry", "4102444800",
        ),
    ):  # fmt: skip
        created = plastron_server.run_cli("entry", "create", *args)
        assert created.returncode == 0, created.stderr
    shown = plastron_server.run_cli("entry", "show", "-output", "json")
    converted = subprocess.run(
        [str(JQ), documented_jq_program()],
        input=shown.stdout,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    data = tmp_path / "entries.json"
    data.write_text(converted.stdout)
    result = second_server.run_cli("entry", "create", "-data", str(data))
    assert result.returncode == 0, result.stderr
    assert _entries(second_server) == _entries(plastron_server)
