"""Only a downstream entry's SVID gets a CA from the upstream: a server whose SVID comes from
an ordinary workload entry does not start, and says the upstream refused it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from softhsm_token import SoftHsmToken

from tests.integration.agent.agent_processes import BIN
from tests.integration.nested.topology import (
    downstream_server,
    register_downstream,
    start_upstream,
)

pytestmark = pytest.mark.softhsm


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pnr-", dir="/tmp"))  # short: Unix socket paths
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_server_without_a_downstream_entry_gets_no_ca(
    base: Path, softhsm_token: SoftHsmToken
) -> None:
    upstream = start_upstream(base, softhsm_token)
    try:
        register_downstream(upstream, "rogue", downstream=False)
        server = downstream_server(base, upstream, "rogue")
        out = subprocess.run(
            [str(BIN / "plastron-server"), "run", "-config", str(server.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 1, out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: spire upstream: server 127.0.0.1:"), last
        assert "refused: PERMISSION_DENIED" in last, last
        assert "Traceback" not in out.stderr
    finally:
        upstream.stop()
