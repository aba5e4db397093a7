"""Real ``plastron-agent run`` processes for the cloud attestors: config, entries through the
server CLI, waiting (polled, with a deadline) for a workload's X509-SVID or for the agent to
exit, and the server's node rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conformance.nodeattestor_env import AttestEnv

BIN = Path(sys.executable).parent
TD = "example.org"
DEADLINE = 60.0


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def server_cli(env: AttestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    out = run([str(BIN / "plastron-server"), *args, "-socketPath", env.socket_path])
    assert out.returncode == 0, out.stderr
    return out


def register_workload(env: AttestEnv, node_selector: str, alias: str, workload: str) -> None:
    """A node alias keyed on ``node_selector`` and a workload (this uid) under it."""
    server_cli(env, "entry", "create", "-parentID", f"spiffe://{TD}/spire/server",
               "-spiffeID", alias, "-selector", node_selector)  # fmt: skip
    server_cli(env, "entry", "create", "-parentID", alias, "-spiffeID", workload,
               "-selector", f"unix:uid:{os.geteuid()}")  # fmt: skip


def agent_config(directory: Path, env: AttestEnv, node_attestor: str) -> Path:
    directory.mkdir(mode=0o755, exist_ok=True)
    bootstrap = directory / "bootstrap.pem"
    bootstrap.write_text(server_cli(env, "bundle", "show").stdout)
    config = directory / "agent.conf"
    config.write_text(f"""
agent {{
  trust_domain = "{TD}"
  server_address = "127.0.0.1"
  server_port = {env.port}
  data_dir = "{directory}/data"
  socket_path = "{directory}/agent.sock"
  trust_bundle_path = "{bootstrap}"
  log_level = "DEBUG"
  experimental {{ sync_interval = "1s" }}
}}
plugins {{
  {node_attestor}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
""")
    return config


@contextmanager
def agent_process(
    config: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``extra_env``: variables added to this process's environment (AWS credentials)."""
    log = config.parent / "agent.log"
    env = {**os.environ, **(extra_env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "plastron-agent"), "run", "-config", str(config)],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def agent_log(config: Path) -> str:
    return (config.parent / "agent.log").read_text(errors="replace")


def wait_for_svid(config: Path, proc: subprocess.Popen[bytes], workload: str) -> None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.returncode}:\n{agent_log(config)[-4000:]}")
        out = run([str(BIN / "plastron-agent"), "api", "fetch", "x509",
                   "-socketPath", str(config.parent / "agent.sock")])  # fmt: skip
        if out.returncode == 0 and workload in out.stdout:
            return
        time.sleep(0.1)  # polling interval, not a readiness guess
    raise AssertionError(f"no X509-SVID for {workload} within {DEADLINE}s:\n{agent_log(config)}")


def wait_for_exit(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait(timeout=DEADLINE)


def node_selectors(env: AttestEnv, agent_id: str) -> set[str]:
    rows = env.node_rows()["node_resolver_map_entries"]
    return {f"{row[2]}:{row[3]}" for row in rows if row[1] == agent_id}
