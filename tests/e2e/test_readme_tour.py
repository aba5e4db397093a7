"""The README's five-minute tour, run as written: a server, a join token, an entry, minted SVIDs,
then an agent that attests and hands this process its X509-SVID and a JWT-SVID.

The block runs literally, with its fixed paths (/tmp/plastron, the default sockets) and port
8081, inside private mount, network and PID namespaces (with a procfs of that PID namespace, as
the agent must see its callers by their own PIDs): a fresh tmpfs on each of those three
directories and a loopback of its own, so it neither sees nor disturbs anything else on the
machine, and every process it starts ends with it. Only its first line
(``make venv && . .venv/bin/activate``) is replaced by this test's own environment, which
`make test` built the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.doc_blocks import block_tested_by

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240
TOUR_DIRS = ("/tmp/plastron", "/tmp/plastron-server", "/tmp/plastron-agent")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for private namespaces",
)


def tour_block() -> str:
    block = block_tested_by(__file__, "test_readme_tour_runs_as_written")
    first, _, rest = block.text.partition("\n")
    assert first == "make venv && . .venv/bin/activate", first
    return rest


def test_readme_tour_runs_as_written() -> None:
    script = "\n".join(
        [
            "set -euo pipefail",
            # fresh, private copies of the three directories the tour uses (not all of /tmp:
            # the checkout or its .venv may live there)
            f"mkdir -p {' '.join(TOUR_DIRS)}",
            *(f"mount -t tmpfs -o mode=755 tmpfs {d}" for d in TOUR_DIRS),
            "ip link set lo up",
            tour_block(),
            "wait",  # the server and the agent end on the block's kill
            "test -s /tmp/plastron/workload/svid.0.pem && echo TOUR-DONE",
        ]
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    done = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "TOUR-DONE" in done.stdout, output[-6000:]
    assert "Token:" not in done.stdout  # captured into $TOKEN, not shown
    assert "spiffe://example.org/web" in done.stdout  # entry show, mint and the agent's fetch
    assert "Traceback" not in output, output[-6000:]
