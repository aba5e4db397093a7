"""``plastron-dev up`` and ``down``: one server and one agent in a directory of their own.

Layout of the directory (every path short: unix socket paths are limited to ~107 bytes):
``server.sock`` (admin API), ``agent/api.sock`` (Workload API), ``bundle.pem``, ``*.conf``,
``*.log``, ``processes.json`` (what ``down`` stops), ``hsm/`` (SoftHSM2 token), ``tpm/`` (swtpm).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpclib.exceptions import GRPCError, StreamTerminatedError

from plastron.devkit import softhsm, swtpm
from plastron.devkit.processes import DevKitError, ProcessBook, poll
from plastron.devkit.swtpm import DevTpm
from plastron.extras import require_extra
from plastron.workloadapi_client import WorkloadClient

MARKER = ".plastron-dev"
READY_DEADLINE_S = 90.0
MAX_SOCKET_PATH = 100
NODE_PATH = "/dev/node"


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"plastron-dev-{os.getuid()}"


@dataclass(frozen=True)
class DevEnvironment:
    """What ``up`` made: the values it prints as ``export`` lines."""

    directory: Path
    trust_domain: str
    attestor: str

    @property
    def server_socket(self) -> Path:
        return self.directory / "server.sock"

    @property
    def workload_socket(self) -> Path:
        return self.directory / "agent" / "api.sock"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "bundle.pem"

    @property
    def parent_id(self) -> str:
        """The agent's node alias: the parent ID of every entry the kit or its user creates."""
        return f"spiffe://{self.trust_domain}{NODE_PATH}"

    @property
    def uid_id(self) -> str:
        return f"spiffe://{self.trust_domain}/dev/uid/{os.getuid()}"

    def exports(self) -> dict[str, str]:
        return {
            "SPIFFE_ENDPOINT_SOCKET": f"unix://{self.workload_socket}",
            "PLASTRON_BUNDLE": str(self.bundle_path),
            "PLASTRON_SERVER_SOCKET": str(self.server_socket),
            "PLASTRON_TRUST_DOMAIN": self.trust_domain,
            "PLASTRON_PARENT_ID": self.parent_id,
        }

    def export_lines(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.exports().items())


def _module(room: str) -> list[str]:
    return [sys.executable, "-m", f"plastron.{room}.cli.main"]


def server_cli(env: DevEnvironment, *args: str) -> str:
    """Run ``plastron-server <args> -socketPath <admin socket>``; its stdout, or DevKitError."""
    cmd = [*_module("server"), *args, "-socketPath", str(env.server_socket)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise DevKitError(f"plastron-server {' '.join(args[:2])}: {message[0]}")
    return proc.stdout


def fetch_x509_ids(socket_path: Path) -> set[str]:
    """The SPIFFE IDs of the X509-SVIDs this process gets from the Workload API (empty when it
    gets none, or the socket does not answer yet)."""

    async def fetch() -> set[str]:
        async with WorkloadClient(str(socket_path), timeout=10) as client:
            response = await client.fetch_x509()
        return {svid.spiffe_id for svid in response.svids}

    try:
        return asyncio.run(fetch())
    except (GRPCError, OSError, TimeoutError, StreamTerminatedError):
        return set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare_dir(directory: Path) -> None:
    """Create ``directory``, or clear one an earlier ``up`` made (never someone else's files)."""
    if directory.exists() and directory.stat().st_uid != os.getuid():
        # A shared /tmp: another user could have made the default directory to catch our keys.
        raise DevKitError(f"{directory} belongs to another user")
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise DevKitError(f"{directory} is not empty and was not made by plastron-dev")
        if ProcessBook(directory).running():
            raise DevKitError(f"an environment is running in {directory}: run plastron-dev down")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / MARKER).touch()
    if len(str(directory / "agent" / "api.sock")) > MAX_SOCKET_PATH:
        raise DevKitError(f"{directory}: too long for unix socket paths; choose a shorter -dir")


def _server_config(env: DevEnvironment, port: int, key_manager: str, tpm: DevTpm | None) -> Path:
    d = env.directory
    conf = d / "server.conf"
    conf.write_text(
        f"""server {{
  trust_domain = "{env.trust_domain}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{env.server_socket}"
  data_dir = "{d}/server-data"
  log_level = "INFO"
}}
plugins {{
  DataStore "sql" {{ plugin_data {{
    database_type = "sqlite3"
    connection_string = "{d}/server-data/datastore.sqlite3"
  }} }}
  {key_manager}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  {tpm.server_attestor_block() if tpm else ""}
}}
"""
    )
    return conf


def _agent_config(env: DevEnvironment, port: int, tpm: DevTpm | None) -> Path:
    """The agent syncs every 250 ms (production: 5 s) so a test's new entry is served in about a
    second; measured idle cost of server and agent together: under 4% of one core."""
    d = env.directory
    conf = d / "agent.conf"
    disk_keys = f'KeyManager "disk" {{ plugin_data {{ directory = "{d}/agent-data" }} }}'
    join_token = 'NodeAttestor "join_token" { plugin_data {} }'  # noqa: S105 (a plugin name)
    conf.write_text(
        f"""agent {{
  trust_domain = "{env.trust_domain}"
  server_address = "127.0.0.1"
  server_port = {port}
  data_dir = "{d}/agent-data"
  socket_path = "{env.workload_socket}"
  trust_bundle_path = "{env.bundle_path}"
  log_level = "INFO"
  experimental {{ sync_interval = "250ms" }}
}}
plugins {{
  {tpm.agent_attestor_block() if tpm else join_token}
  {tpm.agent_key_manager_block() if tpm else disk_keys}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
    )
    return conf


def _start_server(book: ProcessBook, env: DevEnvironment, conf: Path, hsm: dict[str, str]) -> None:
    log = env.directory / "server.log"
    args = [*_module("server"), "run", "-config", str(conf)]
    proc = book.start("plastron-server", args, log, hsm)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise DevKitError(f"plastron-server exited with code {proc.returncode} (see {log})")
        if not env.server_socket.exists():
            return False
        cmd = [*_module("server"), "healthcheck", "-socketPath", str(env.server_socket)]
        return subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode == 0

    poll("plastron-server to be healthy", healthy, READY_DEADLINE_S)


def _node_alias(env: DevEnvironment, tpm: DevTpm | None) -> str | None:
    """Make the agent's node alias: by its TPM's EK when there is a TPM, else by a join token
    (returned, for the agent's ``-joinToken``)."""
    if tpm is not None:
        args = ["entry", "create", "-node", "-spiffeID", env.parent_id]
        server_cli(env, *args, "-selector", tpm.node_selector)
        return None
    out = server_cli(env, "token", "generate", "-spiffeID", env.parent_id, "-ttl", "600")
    return out.strip().splitlines()[0].split()[-1]


def register(env: DevEnvironment, spiffe_id: str, selectors: list[str]) -> str:
    """Create an entry under the agent's node alias; its entry ID."""
    args = ["entry", "create", "-parentID", env.parent_id, "-spiffeID", spiffe_id]
    for selector in selectors:
        args += ["-selector", selector]
    out = server_cli(env, *args, "-output", "json")
    found = re.search(r'"id"\s*:\s*"([^"]+)"', out)
    if found is None:
        raise DevKitError(f"plastron-server entry create printed no entry ID: {out[:200]}")
    return found.group(1)


def delete_entry(env: DevEnvironment, entry_id: str) -> None:
    server_cli(env, "entry", "delete", "-entryID", entry_id)


def wait_for_agent_sync(env: DevEnvironment) -> None:
    """Return once the agent's cache reflects every entry change made before this call.

    The agent fetches all its entries in one sync, so a marker entry for this process's uid,
    created now, reaches the Workload API only with (or after) every earlier change: once this
    process is served the marker's SVID, earlier entries are in the agent's cache (a workload
    they match is answered; its stream waits for an SVID still being signed) and deleted ones
    are gone. The marker is then deleted and awaited gone, leaving the caller's SVIDs as they
    were."""
    marker = f"spiffe://{env.trust_domain}/dev/sync/{secrets.token_hex(8)}"
    marker_entry = register(env, marker, [f"unix:uid:{os.getuid()}"])
    try:
        poll(
            f"the agent to sync (marker {marker} served)",
            lambda: marker in fetch_x509_ids(env.workload_socket),
            READY_DEADLINE_S,
        )
    finally:
        delete_entry(env, marker_entry)

    def marker_gone() -> bool:
        ids = fetch_x509_ids(env.workload_socket)
        return env.uid_id in ids and marker not in ids

    poll(f"the agent to sync (marker {marker} gone)", marker_gone, READY_DEADLINE_S)


def _start_agent(
    book: ProcessBook, env: DevEnvironment, port: int, token: str | None, tpm: DevTpm | None
) -> None:
    conf = _agent_config(env, port, tpm)
    args = [*_module("agent"), "run", "-config", str(conf)]
    if token is not None:
        args += ["-joinToken", token]
    log = env.directory / "agent.log"
    proc = book.start("plastron-agent", args, log, tpm.env if tpm else None)

    def served() -> bool:
        if proc.poll() is not None:
            raise DevKitError(f"plastron-agent exited with code {proc.returncode} (see {log})")
        return env.uid_id in fetch_x509_ids(env.workload_socket)

    poll(f"an X509-SVID for {env.uid_id} from the Workload API", served, READY_DEADLINE_S)


def up(directory: Path, trust_domain: str, attestor: str) -> DevEnvironment:
    """Start SoftHSM2-backed server and agent; return once this uid can fetch its X509-SVID.
    On failure, stops whatever it had started and raises DevKitError."""
    # Checked before anything starts: the server and agent would fail on these only in their logs.
    require_extra("hsm", "plastron-dev (the server's CA keys in SoftHSM2)")
    if attestor == "tpm":
        require_extra("tpm", "plastron-dev -attestor tpm")
    _prepare_dir(directory)
    env = DevEnvironment(directory, trust_domain, attestor)
    book = ProcessBook(directory)
    try:
        token = softhsm.init_token(directory / "hsm")
        tpm = swtpm.start_dev_tpm(book, directory / "tpm") if attestor == "tpm" else None
        port = _free_port()
        conf = _server_config(env, port, token.key_manager_block(), tpm)
        _start_server(book, env, conf, token.env)
        join_token = _node_alias(env, tpm)
        register(env, env.uid_id, [f"unix:uid:{os.getuid()}"])
        env.bundle_path.write_text(server_cli(env, "bundle", "show"))
        _start_agent(book, env, port, join_token, tpm)
    except BaseException:
        book.stop_all()
        raise
    return env


def down(directory: Path) -> list[str]:
    """Stop what ``up`` started in ``directory``; the names of the processes stopped.
    Idempotent: nothing running (or no directory) is not an error."""
    if not (directory / MARKER).exists():
        return []
    stopped = ProcessBook(directory).stop_all()
    for sock in (directory / "server.sock", directory / "agent" / "api.sock"):
        sock.unlink(missing_ok=True)
    return stopped
