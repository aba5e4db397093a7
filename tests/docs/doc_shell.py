"""Run documented shell blocks as written, in private namespaces.

The pages use fixed places: the default sockets under /tmp/plastron-server and
/tmp/plastron-agent, /etc/plastron, /var/lib/plastron, /run/plastron-agent. A page's blocks run
in one ``bash -euo pipefail`` inside new mount and PID namespaces (and a network namespace of
its own when asked): a fresh tmpfs on each /tmp directory the pages use and a writable overlay
on /etc, /var/lib and /run, so the commands find their paths, change nothing outside, and every
process they start ends with the run (the namespace's init is the script).

Each block is preceded by a ``=== BLOCK page:line`` line on stdout, so a failure names the block
it happened in. This process's interpreter's directory (the project's .venv) leads PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.doc_blocks import REPO, Block, console_steps

TMP_DIRS = ("/tmp/plastron", "/tmp/plastron-server", "/tmp/plastron-agent")
OVERLAID = ("/etc", "/var/lib", "/run")
BLOCK_LINE = "=== BLOCK "
TIMEOUT = 240

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip for private namespaces",
)


@dataclass(frozen=True)
class PageRun:
    returncode: int
    stdout: str
    stderr: str

    def output_of(self, block: Block) -> str:
        """What ``block`` printed on stdout."""
        start = self.stdout.index(f"{BLOCK_LINE}{block.where}\n")
        lines = self.stdout[start:].splitlines(keepends=True)[1:]
        end = next((i for i, line in enumerate(lines) if line.startswith("=== ")), len(lines))
        return "".join(lines[:end])

    def failure(self) -> str:
        last = [line for line in self.stdout.splitlines() if line.startswith(BLOCK_LINE)]
        where = last[-1][len(BLOCK_LINE) :] if last else "the setup"
        output = f"{self.stdout[-3000:]}\n{self.stderr[-5000:]}"
        return f"failed in {where} (exit {self.returncode}):\n{output}"


def _namespace_setup(scratch: Path, network: bool) -> list[str]:
    lines = [f"mkdir -p {' '.join(TMP_DIRS)}"]
    lines += [f"mount -t tmpfs -o mode=755 tmpfs {d}" for d in TMP_DIRS]
    lines.append(f"mount -t tmpfs -o mode=700 tmpfs {scratch}")
    for index, lower in enumerate(OVERLAID):
        upper, work = scratch / f"upper{index}", scratch / f"work{index}"
        lines.append(f"mkdir -p {upper} {work}")
        lines.append(
            f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {lower}"
        )
    if network:
        lines.append("ip link set lo up")
    lines.append(f"mkdir -p {scratch}/work && cd {scratch}/work")
    return lines


def block_script(block: Block) -> str:
    """The block as it runs: in a subshell, after its ``=== BLOCK`` line; a console block's
    commands without their ``$`` prompts (the caller compares what it shows, if anything)."""
    text = block.text
    if block.lang == "console":
        text = "".join(f"{step.command}\n" for step in console_steps(block))
    return f"echo '{BLOCK_LINE}{block.where}'\n(\n{text})"


def run_page(
    tmp_path: Path,
    steps: Sequence[str | Block],
    *,
    network: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> PageRun:
    """Run ``steps`` (shell text of the test's own, or documented blocks) in one namespace.

    ``network``: a loopback of its own (for pages that bind fixed ports). The namespace's
    scratch space hides ``tmp_path/namespace``; steps leave files for the test in
    ``$RESULTS`` (``tmp_path/results``)."""
    scratch, results = tmp_path / "namespace", tmp_path / "results"
    scratch.mkdir(parents=True, exist_ok=True)
    results.mkdir(exist_ok=True)
    script = "\n".join(
        [
            *_namespace_setup(scratch, network),
            *(block_script(s) if isinstance(s, Block) else s for s in steps),
            "echo '=== END'",
        ]
    )
    run_env = {**os.environ, **(env or {}), "RESULTS": str(results)}
    run_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run_env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    # --mount-proc: the agent must see its callers by their PIDs in this namespace
    flags = ["--mount", "--pid", "--fork", "--mount-proc", *(["--net"] if network else [])]
    done = subprocess.run(
        ["unshare", *flags, "bash", "-euo", "pipefail", "-c", script],
        check=False,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return PageRun(done.returncode, done.stdout, done.stderr)


# A server as the pages assume one: its config at /etc/plastron/server.conf, data in
# /var/lib/plastron (SQLite at the default <data_dir>/datastore.sqlite3), the default admin
# socket. Not a documented block: the pages' own config blocks are validated by test_docs_hcl.
SERVER_CONF = """server {
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port    = PORT
  data_dir     = "/var/lib/plastron"
}
plugins {
  DataStore "sql"           { plugin_data { database_type = "sqlite3" } }
  KeyManager "disk"         { plugin_data { directory = "/var/lib/plastron/keys" } }
  NodeAttestor "join_token" { plugin_data {} }
}
"""


def start_server(port: int, conf: str = SERVER_CONF, *, socket_path: str | None = None) -> str:
    """Shell text: write the server config, start the server, wait until it answers.

    ``socket_path``: the admin socket, where a page names another than the default."""
    conf = conf.replace("PORT", str(port))
    healthcheck = "plastron-server healthcheck"
    if socket_path is not None:
        conf = conf.replace("  data_dir", f'  socket_path  = "{socket_path}"\n  data_dir', 1)
        healthcheck += f" -socketPath {socket_path}"
    return "\n".join(
        [
            "mkdir -p /etc/plastron /var/lib/plastron && chmod 700 /var/lib/plastron",
            f"cat > /etc/plastron/server.conf <<'CONF'\n{conf}CONF",
            "plastron-server run -config /etc/plastron/server.conf > server.log 2>&1 &",
            "ready=",
            f"for i in $(seq 600); do {healthcheck} >/dev/null 2>&1 && ready=1 && break; "
            "sleep 0.1; done",
            '[ -n "$ready" ] || { cat server.log; exit 1; }',  # one healthcheck fewer: ~1 s
        ]
    )
