"""Every gRPC listener (the server's TCP+TLS port, the Unix sockets) listens with the kernel's
``net.core.somaxconn`` as its backlog, not asyncio's 100: thousands of agents reconnecting after
a server restart, or a node's workloads after a reboot, must queue rather than be refused.

The figure checked is the kernel's own (``ss`` shows a listener's backlog as its Send-Q); the
behaviour it buys on the agent socket is tested in
tests/integration/agent/test_workload_api_burst.py.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from transport_pki import PkiCa

from plastron.agent.workloadapi.endpoint import AgentHealth
from plastron.transport.limits import listen_backlog
from plastron.transport.server import start_server
from plastron.transport.tls import server_ssl_context

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")


def _listener_backlogs(*ss_args: str) -> dict[str, int]:
    """Local address -> backlog of each listening socket ``ss`` lists."""
    out = subprocess.run(
        ["ss", "-lnH", *ss_args], check=True, capture_output=True, text=True
    ).stdout
    backlogs = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] in ("LISTEN", "u_str"):
            if fields[0] == "LISTEN":  # tcp: State Recv-Q Send-Q Local Peer
                backlogs[fields[3]] = int(fields[2])
            else:  # unix: Netid State Recv-Q Send-Q Local Inode Peer Inode
                backlogs[fields[4]] = int(fields[3])
    return backlogs


def test_somaxconn_is_read_from_the_kernel(tmp_path: Path) -> None:
    path = tmp_path / "somaxconn"
    path.write_text("4096\n")
    assert listen_backlog(str(path)) == 4096
    assert listen_backlog(str(tmp_path / "missing")) > 0


async def test_server_tcp_and_unix_listeners_use_somaxconn(ca: PkiCa) -> None:
    svid = ca.svid("/spire/server")
    ctx = server_ssl_context(svid.chain, svid.key, lambda: [ca.cert])
    short = Path(tempfile.mkdtemp(prefix="plb-", dir="/tmp"))  # Unix paths: 107 bytes at most
    uds = str(short / "api.sock")
    async with await start_server(
        [AgentHealth()],
        tcp=("127.0.0.1", 0),
        ssl=ctx,
        uds_path=uds,
    ) as running:
        assert running.tcp_address is not None
        host, port = running.tcp_address
        tcp = _listener_backlogs("-t")
        unix = _listener_backlogs("-x")
    shutil.rmtree(short, ignore_errors=True)
    assert tcp[f"{host}:{port}"] == listen_backlog()
    # the kernel keeps the name the socket was bound to (a staging name renamed into place)
    (uds_backlog,) = [b for name, b in unix.items() if name.startswith(f"{short}/")]
    assert uds_backlog == listen_backlog()
