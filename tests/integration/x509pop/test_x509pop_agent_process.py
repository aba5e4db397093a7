"""A real agent process attests to a real server process with x509pop, and a workload on the
node gets an X509-SVID through a node alias keyed on an x509pop selector."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from x509pop_pki import Issued, make_ca, make_leaf, new_key, write_files
from x509pop_processes import BIN, DEADLINE, TD, X509PopServer

NOW = dt.datetime.now(dt.UTC)
NODE_ALIAS = f"spiffe://{TD.name}/node/x509pop-rack"
WORKLOAD = f"spiffe://{TD.name}/workload/x509pop"


def agent_config(base: Path, server: X509PopServer, files: dict[str, str]) -> str:
    data = "\n    ".join(f'{k} = "{v}"' for k, v in files.items())
    return f"""
agent {{
  trust_domain = "{TD.name}"
  server_address = "127.0.0.1"
  server_port = {server.port}
  data_dir = "{base}/agent-data"
  socket_path = "{base}/agent.sock"
  trust_bundle_path = "{base}/bootstrap.pem"
  log_level = "DEBUG"
  experimental {{ sync_interval = "1s" }}
}}
plugins {{
  NodeAttestor "x509pop" {{ plugin_data {{
    {data}
  }} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-x5a-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def poll_until(what: str, fn: object) -> str:
    end = time.monotonic() + DEADLINE
    last = ""
    while time.monotonic() < end:
        last = fn()  # type: ignore[operator]
        if last:
            return last
        time.sleep(0.1)  # polling interval, not a readiness guess
    raise AssertionError(f"{what}: not within {DEADLINE}s")


def _pki() -> tuple[Issued, Issued, Issued]:
    root = make_ca("Agent Proc Root", not_before=NOW - dt.timedelta(days=1))
    inter = make_ca("Agent Proc Inter", parent=root, not_before=NOW - dt.timedelta(days=1))
    node = make_leaf(
        inter,
        key=new_key("ec-p256", slot=30),
        cn="rack-7-node",
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(days=1),
    )
    return root, inter, node


def test_agent_process_attests_with_x509pop(base: Path) -> None:
    root, inter, node = _pki()
    (base / "ca.pem").write_bytes(root.pem())
    server = X509PopServer(base, f'ca_bundle_path = "{base}/ca.pem"')
    server.start()
    try:
        _attest_and_fetch(base, server, node, inter)
    finally:
        server.stop()


def test_relative_plugin_paths_resolve_from_the_config_files_directory(base: Path) -> None:
    """``ca_bundle_path = "ca.pem"`` (server) and the agent's relative certificate and key
    paths name files next to each config file, whichever directory the processes run in."""
    root, inter, node = _pki()
    (base / "ca.pem").write_bytes(root.pem())
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    server = X509PopServer(base, 'ca_bundle_path = "ca.pem"')
    server.start(cwd=elsewhere)
    try:
        _attest_and_fetch(base, server, node, inter, run_from=elsewhere)
    finally:
        server.stop()


def _attest_and_fetch(
    base: Path, server: X509PopServer, node: Issued, inter: Issued, run_from: Path | None = None
) -> None:
    """Register a node alias and a workload, run the agent and wait for the workload's SVID.
    With ``run_from``, the agent's config sits next to its node files, names them relatively,
    and the agent runs from ``run_from``."""
    cli = [str(BIN / "plastron-server")]
    sock = ["-socketPath", server.socket_path]
    made = run(
        [
            *cli,
            "entry",
            "create",
            "-parentID",
            f"spiffe://{TD.name}/spire/server",
            "-spiffeID",
            NODE_ALIAS,
            "-selector",
            "x509pop:subject:cn:rack-7-node",
            *sock,
        ]
    )
    assert made.returncode == 0, made.stderr
    made = run(
        [
            *cli,
            "entry",
            "create",
            "-parentID",
            NODE_ALIAS,
            "-spiffeID",
            WORKLOAD,
            "-selector",
            f"unix:uid:{os.geteuid()}",
            *sock,
        ]
    )
    assert made.returncode == 0, made.stderr
    (base / "bootstrap.pem").write_text(run([*cli, "bundle", "show", *sock]).stdout)
    files = write_files(base / "node", node, [inter])
    config = base / "agent.conf"
    if run_from is not None:
        files = {key: Path(path).name for key, path in files.items()}
        config = base / "node" / "agent.conf"
    config.write_text(agent_config(base, server, files))
    with (base / "agent.log").open("ab") as log:
        agent = subprocess.Popen(
            [str(BIN / "plastron-agent"), "run", "-config", str(config)],
            stdout=log,
            stderr=log,
            cwd=run_from,
        )
    try:
        _wait_for_svid(base, agent)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=20)
    listed = run([*cli, "agent", "list", *sock]).stdout
    assert f"spiffe://{TD.name}/spire/agent/x509pop/" in listed, listed


def _wait_for_svid(base: Path, agent: subprocess.Popen[bytes]) -> None:
    def fetched() -> str:
        if agent.poll() is not None:
            log = (base / "agent.log").read_text(errors="replace")
            raise AssertionError(f"agent exited {agent.returncode}:\n{log[-4000:]}")
        out = run(
            [
                str(BIN / "plastron-agent"),
                "api",
                "fetch",
                "x509",
                "-socketPath",
                str(base / "agent.sock"),
            ]
        )
        return out.stdout if out.returncode == 0 and WORKLOAD in out.stdout else ""

    assert WORKLOAD in poll_until("workload X509-SVID through the x509pop node alias", fetched)
