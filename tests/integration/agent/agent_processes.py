"""Real ``plastron-server run`` and ``plastron-agent run`` processes for agent e2e tests.

Readiness is polled (health checks, socket answers) with deadlines; nothing sleeps to guess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.processes import free_port, poll, stop_process

BIN = Path(sys.executable).parent
TD = "example.org"
DEADLINE = 60.0
T = TypeVar("T")


@dataclass
class Proc:
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int | None:
        return stop_process(self.process)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class ServerProcess:
    def __init__(self, base: Path, server_extra: str = "", td: str = TD) -> None:
        self.base = base
        self.td = td
        self.port = free_port()
        self.socket_path = str(base / "server.sock")
        self.config = base / "server.conf"
        self.config.write_text(
            f"""
server {{
  trust_domain = "{td}"
  bind_address = "127.0.0.1"
  bind_port = {self.port}
  socket_path = "{self.socket_path}"
  data_dir = "{base}/server-data"
  log_level = "INFO"
  {server_extra}
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"
    connection_string = "{base}/server-data/ds.sqlite3" }} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{base}/server-keys" }} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""
        )
        self.proc = Proc(
            [str(BIN / "plastron-server"), "run", "-config", str(self.config)],
            base / "server.log",
        )

    def start(self) -> None:
        self.proc.start()

        def healthy() -> bool:
            if not self.proc.running():
                raise AssertionError(f"server exited:\n{self.proc.log()}")
            return self.cli("healthcheck", check=False).returncode == 0

        poll("server healthy", healthy)

    def stop(self) -> None:
        self.proc.stop()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(BIN / "plastron-server"), *args, "-socketPath", self.socket_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"plastron-server {' '.join(args)}: {out.stderr}")
        return out

    def join_token(self, node_id: str | None = None) -> str:
        extra = ["-spiffeID", node_id] if node_id else []
        out = self.cli("token", "generate", "-ttl", "600", *extra).stdout
        # "Token: <value>", then (without -spiffeID) a warning line
        return next(line.split()[-1] for line in out.splitlines() if line.startswith("Token:"))

    def create_entry(self, parent: str, spiffe_id: str, *selectors: str) -> str:
        args = ["entry", "create", "-parentID", parent, "-spiffeID", spiffe_id]
        for sel in selectors:
            args += ["-selector", sel]
        out = self.cli(*args).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Entry ID" in line
        )

    def agents(self) -> str:
        return self.cli("agent", "list").stdout


class AgentProcess:
    def __init__(
        self,
        base: Path,
        server: ServerProcess,
        sync_interval: str = "1s",
        extra_top: str = "",
        server_port: int | None = None,
        agent_extra: str = "",
        plugins_extra: str = "",
        td: str = TD,
        experimental_extra: str = "",
    ) -> None:
        """``server_port``: where the agent dials its server (a relay), if not the server's;
        ``plugins_extra``: more plugin blocks (e.g. another WorkloadAttestor);
        ``experimental_extra``: more keys of the agent's ``experimental`` block."""
        self.base = base
        self.socket_path = str(base / "agent" / "public" / "api.sock")
        self.data_dir = base / "agent-data"
        (base / "bootstrap.pem").write_text(server.cli("bundle", "show").stdout)
        self.config = base / "agent.conf"
        self.config.write_text(
            f"""
agent {{
  trust_domain = "{td}"
  server_address = "127.0.0.1"
  server_port = {server_port or server.port}
  data_dir = "{self.data_dir}"
  socket_path = "{self.socket_path}"
  trust_bundle_path = "{base}/bootstrap.pem"
  log_level = "INFO"
  experimental {{ sync_interval = "{sync_interval}" {experimental_extra} }}
  {agent_extra}
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{self.data_dir}" }} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
  {plugins_extra}
}}
{extra_top}
"""
        )
        self.proc: Proc | None = None

    def start(self, token: str | None = None) -> None:
        args = [str(BIN / "plastron-agent"), "run", "-config", str(self.config)]
        if token:
            args += ["-joinToken", token]
        self.proc = Proc(args, self.base / "agent.log")
        self.proc.start()
        proc = self.proc

        def healthy() -> bool:
            if not proc.running():
                raise AssertionError(f"agent exited:\n{proc.log()}")
            return self.cli("healthcheck").returncode == 0

        poll("agent healthy", healthy)

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None

    def log_text(self) -> str:
        """The agent's log so far; raises AssertionError (with the log) if it has exited."""
        assert self.proc is not None
        if not self.proc.running():
            raise AssertionError(f"agent exited:\n{self.proc.log()}")
        return self.proc.log()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "plastron-agent"), *args, "-socketPath", self.socket_path],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @property
    def uid_selector(self) -> str:
        return f"unix:uid:{os.geteuid()}"
