"""`make demo`: a Plastron server on embedded defaults, driven through its CLI, end to end.

Starts a server (SQLite datastore, CA keys in a SoftHSM2 token when SoftHSM2 is installed,
else on disk), creates entries, starts an agent that attests with a swtpm TPM (``tpm`` method;
a join token when swtpm is missing),
fetches the workload's X509-SVID and JWT-SVID through the Workload API, verifies them against
the trust bundle, and stops everything. Exit 0 on success; any failure prints one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from plastron.clock import SystemClock
from plastron.devkit import softhsm
from plastron.devkit.processes import DevKitError, ProcessBook
from plastron.devkit.swtpm import DevTpm, missing_packages, start_dev_tpm
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import load_pem_certificates, validate_x509_svid

TD = "example.org"
BIN = Path(sys.executable).parent


class DemoError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def cli(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [str(BIN / "plastron-server"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        raise DemoError(f"plastron-server {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists():
            return
        if proc.poll() is not None:
            raise DemoError(f"{what} exited early with code {proc.returncode}")
        time.sleep(0.1)
    raise DemoError(f"{what} did not come up within {deadline:g}s")


def key_manager_block(work: Path) -> str:
    """A SoftHSM2 token for the CA keys when SoftHSM2 is installed (make installs it)."""
    if softhsm.find_module() is None or shutil.which("softhsm2-util") is None:
        return f'KeyManager "disk" {{ plugin_data {{ directory = "{work}/keys" }} }}'
    token = softhsm.init_token(work / "hsm")
    os.environ.update(token.env)  # the server process inherits it
    step(f"CA keys will live in SoftHSM2 token '{token.label}'")
    return token.key_manager_block()


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def node_attestation(sock: Path, node_id: str, tpm: DevTpm | None) -> str | None:
    """Make ``node_id`` a node alias for the demo agent: by its TPM's EK when swtpm is there
    (the agent attests with the ``tpm`` method), else by a join token (returned)."""
    if tpm is not None:
        cli(
            "entry",
            "create",
            "-socketPath",
            str(sock),
            "-node",
            "-spiffeID",
            node_id,
            "-selector",
            tpm.node_selector,
        )
        step(f"node alias {node_id} for the agent whose TPM EK hash is {tpm.ek_pubhash[:16]}…")
        return None
    token = cli("token", "generate", "-socketPath", str(sock), "-spiffeID", node_id, "-ttl", "600")
    step("join token created for the node alias " + node_id)
    return token.strip().splitlines()[0].split()[-1]


def run(work: Path, tpm: DevTpm | None) -> None:
    port = free_port()
    sock = work / "server.sock"
    conf = work / "server.conf"
    conf.write_text(
        f"""
server {{
  trust_domain = "{TD}"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{sock}"
  data_dir = "{work}/server-data"
  log_level = "INFO"
}}
plugins {{
  DataStore "sql" {{ plugin_data {{
    database_type = "sqlite3"
    connection_string = "{work}/server-data/datastore.sqlite3"
  }} }}
  {key_manager_block(work)}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  {tpm.server_attestor_block() if tpm else ""}
}}
"""
    )
    step(f"starting plastron-server on 127.0.0.1:{port} (admin socket {sock})")
    with process(
        [str(BIN / "plastron-server"), "run", "-config", str(conf)], work / "server.log"
    ) as server:
        wait_for(sock, server, "plastron-server")
        print(cli("healthcheck", "-socketPath", str(sock)).strip())
        node_id = f"spiffe://{TD}/demo/node"
        workload_id = f"spiffe://{TD}/demo/workload"
        token = node_attestation(sock, node_id, tpm)
        out = cli(
            "entry",
            "create",
            "-socketPath",
            str(sock),
            "-parentID",
            node_id,
            "-spiffeID",
            workload_id,
            "-selector",
            f"unix:uid:{os.getuid()}",
        )
        print(out.strip())
        bundle_pem = cli("bundle", "show", "-socketPath", str(sock)).encode()
        roots = load_pem_certificates(bundle_pem)
        step(f"trust bundle has {len(roots)} X.509 authority(ies)")
        mint_dir = work / "minted"
        mint_dir.mkdir()
        cli(
            "x509",
            "mint",
            "-socketPath",
            str(sock),
            "-spiffeID",
            workload_id,
            "-write",
            str(mint_dir),
        )
        chain = load_pem_certificates((mint_dir / "svid.pem").read_bytes())
        sid = validate_x509_svid(chain, roots, SystemClock().now())
        step(f"x509 mint: {sid} verified (expires {chain[0].not_valid_after_utc:%H:%M:%S} UTC)")
        token_jwt = cli(
            "jwt", "mint", "-socketPath", str(sock), "-spiffeID", workload_id, "-audience", "demo"
        ).strip()
        bundle = Bundle.from_jwks(
            TrustDomain(TD),
            cli("bundle", "show", "-socketPath", str(sock), "-format", "spiffe").encode(),
        )
        jwt = validate_jwt_svid(
            token_jwt, audience="demo", authorities=bundle.jwt_keys(), now=SystemClock().now()
        )
        step(f"jwt mint: {jwt.spiffe_id} aud={list(jwt.audience)} verified")
        run_agent(work, port, token=token, bundle_pem=bundle_pem, workload_id=workload_id, tpm=tpm)
        if tpm is not None:
            shown = cli("agent", "show", "-socketPath", str(sock), "-spiffeID", tpm.agent_id(TD))
            print(shown.strip())
    step("server stopped cleanly")


def run_agent(
    work: Path,
    port: int,
    *,
    token: str | None,
    bundle_pem: bytes,
    workload_id: str,
    tpm: DevTpm | None,
) -> None:
    agent_bin = BIN / "plastron-agent"
    (work / "bootstrap.pem").write_bytes(bundle_pem)
    api_sock = work / "agent" / "public" / "api.sock"
    conf = work / "agent.conf"
    disk_keys = f'KeyManager "disk" {{ plugin_data {{ directory = "{work}/agent-data" }} }}'
    conf.write_text(
        f"""
agent {{
  trust_domain = "{TD}"
  server_address = "127.0.0.1"
  server_port = {port}
  data_dir = "{work}/agent-data"
  socket_path = "{api_sock}"
  trust_bundle_path = "{work}/bootstrap.pem"
  log_level = "INFO"
}}
plugins {{
  {tpm.agent_attestor_block() if tpm else 'NodeAttestor "join_token" { plugin_data {} }'}
  {tpm.agent_key_manager_block() if tpm else disk_keys}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""
    )
    args = [str(agent_bin), "run", "-config", str(conf)]
    if token is not None:
        args += ["-joinToken", token]
    method = (
        "tpm attestation with swtpm; its SVID key is created in the TPM and signs its mTLS there"
        if tpm
        else "join_token attestation"
    )
    step(f"starting plastron-agent ({method})")
    with process(args, work / "agent.log", tpm.env if tpm else None) as agent:
        wait_for(api_sock, agent, "plastron-agent")
        (work / "fetched").mkdir()
        deadline = time.monotonic() + 30
        out = None
        last_error = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [
                    str(agent_bin),
                    "api",
                    "fetch",
                    "x509",
                    "-socketPath",
                    str(api_sock),
                    "-write",
                    str(work / "fetched"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.returncode == 0:
                out = proc.stdout
                break
            last_error = proc.stderr.strip()
            time.sleep(0.5)
        if out is None:
            raise DemoError(
                f"the workload got no X509-SVID from the agent within 30s: {last_error}"
            )
        print(out.strip())
        chain = load_pem_certificates((work / "fetched" / "svid.0.pem").read_bytes())
        roots = load_pem_certificates((work / "fetched" / "bundle.0.pem").read_bytes())
        sid = validate_x509_svid(chain, roots, SystemClock().now())
        if str(sid) != workload_id:
            raise DemoError(f"expected {workload_id}, got {sid}")
        step(f"Workload API X509-SVID {sid} verified against the bundle")
        jwt = subprocess.run(
            [
                str(agent_bin),
                "api",
                "fetch",
                "jwt",
                "-socketPath",
                str(api_sock),
                "-audience",
                "demo",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if jwt.returncode != 0:
            raise DemoError(f"api fetch jwt failed: {jwt.stderr.strip()}")
        print(jwt.stdout.strip()[:400])
        step("Workload API JWT-SVID fetched")
    step("agent stopped cleanly")


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="plastron-demo-"))
    tpm: DevTpm | None = None
    book = ProcessBook(work)
    try:
        if not missing_packages():
            tpm = start_dev_tpm(book, work / "tpm")
            step(f"swtpm manufactured with an EK certificate; agent TCTI {tpm.tcti}")
        else:
            step("swtpm not installed: the agent will attest with a join token")
        run(work, tpm)
    except (DemoError, DevKitError, OSError, subprocess.SubprocessError) as exc:
        print(f"demo failed: {exc} (logs in {work})", file=sys.stderr)
        return 1
    finally:
        book.stop_all()
    step(f"demo finished in {time.monotonic() - started:.1f}s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
