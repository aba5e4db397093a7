"""``plastron-dev up|down`` as a CI job runs it: a subprocess, its export lines, real processes.

Each test's environment lives in a short mkdtemp directory (unix socket paths are limited) and
is taken down in a ``finally``, so a failing assertion never leaves processes behind.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import WorkloadApiClient

from plastron.devkit.processes import ProcessBook
from plastron.spiffe.x509svid import load_pem_certificates, validate_x509_svid
from tests.docs.doc_blocks import blocks_tested_by, console_steps

DEV = [sys.executable, "-m", "plastron.devkit"]

pytestmark = pytest.mark.softhsm


def dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEV, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def parse_exports(stdout: str) -> dict[str, str]:
    exports = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        assert words[0] == "export", line
        name, _, value = words[1].partition("=")
        exports[name] = value
    return exports


@pytest.fixture
def dev_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pd-"))
    try:
        yield directory
    finally:
        dev("down", "-dir", str(directory))
        shutil.rmtree(directory, ignore_errors=True)


def server_cli(exports: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``plastron-server <args>`` on the admin socket ``up`` printed."""
    socket_flag = ["-socketPath", exports["PLASTRON_SERVER_SOCKET"]]
    return subprocess.run(
        [sys.executable, "-m", "plastron.server.cli.main", *args, *socket_flag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def path_without_swtpm(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has softhsm2-util but none of the swtpm tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    softhsm_util = shutil.which("softhsm2-util")
    assert softhsm_util is not None
    (bin_dir / "softhsm2-util").symlink_to(softhsm_util)
    return {**os.environ, "PATH": str(bin_dir)}


def assert_workload_gets_its_svid(exports: dict[str, str], td: str) -> None:
    want = f"spiffe://{td}/dev/uid/{os.getuid()}"
    client = WorkloadApiClient(socket_path=exports["SPIFFE_ENDPOINT_SOCKET"], default_timeout=10)
    try:
        svid = client.fetch_x509_svid()
    finally:
        client.close()
    assert str(svid.spiffe_id) == want
    roots = load_pem_certificates(Path(exports["PLASTRON_BUNDLE"]).read_bytes())
    leaf: list[x509.Certificate] = list(svid.cert_chain)
    assert str(validate_x509_svid(leaf, roots, leaf[0].not_valid_before_utc)) == want


def test_up_without_swtpm_falls_back_to_join_token_and_down_stops_all(
    dev_dir: Path, tmp_path: Path
) -> None:
    env = path_without_swtpm(tmp_path)
    up = dev("up", "-dir", str(dev_dir), "-trustDomain", "ci.example", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stderr.strip().splitlines() == [
        "plastron-dev: swtpm not installed (dbus, swtpm, swtpm-tools, tpm2-abrmd, tpm2-tools):"
        " the agent attests with a join token"
    ]
    exports = parse_exports(up.stdout)
    assert exports["SPIFFE_ENDPOINT_SOCKET"] == f"unix://{dev_dir}/agent/api.sock"
    assert_workload_gets_its_svid(exports, "ci.example")
    # The admin socket takes the CLI's entry create, as the printed variable promises.
    created = server_cli(
        exports,
        "entry",
        "create",
        "-parentID",
        exports["PLASTRON_PARENT_ID"],
        "-spiffeID",
        "spiffe://ci.example/x",
        "-selector",
        "unix:uid:4242",
    )
    assert created.returncode == 0, created.stderr
    recorded = ProcessBook(dev_dir).entries
    assert [r.name for r in recorded] == ["plastron-server", "plastron-agent"]
    second = dev("up", "-dir", str(dev_dir), "-attestor", "join_token")
    assert (second.returncode, second.stderr) == (
        1,
        f"plastron-dev: an environment is running in {dev_dir}: run plastron-dev down\n",
    )

    down = dev("down", "-dir", str(dev_dir))
    assert down.returncode == 0, down.stderr
    assert down.stderr == "plastron-dev: stopped plastron-agent, plastron-server\n"
    assert ProcessBook(dev_dir).running() == []
    for record in recorded:
        assert not _running(record.pid)
    again = dev("down", "-dir", str(dev_dir))
    assert (again.returncode, again.stderr) == (0, "plastron-dev: stopped nothing (not running)\n")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.swtpm
def test_up_with_swtpm_attests_by_tpm_and_keeps_the_ca_key_in_softhsm(dev_dir: Path) -> None:
    up = dev("up", "-dir", str(dev_dir), "-attestor", "tpm")
    assert up.returncode == 0, up.stderr
    exports = parse_exports(up.stdout)
    assert_workload_gets_its_svid(exports, "example.org")
    names = [r.name for r in ProcessBook(dev_dir).entries]
    assert names == ["swtpm", "dbus-daemon", "tpm2-abrmd", "plastron-server", "plastron-agent"]
    agents = server_cli(exports, "agent", "list")
    assert "spiffe://example.org/spire/agent/tpm/" in agents.stdout, agents.stdout
    assert_ca_key_in_token(dev_dir)

    down = dev("down", "-dir", str(dev_dir))
    assert down.returncode == 0, down.stderr
    assert ProcessBook(dev_dir).running() == []


def assert_ca_key_in_token(dev_dir: Path) -> None:
    """The server's CA keys are private key objects in the dev token."""
    conf = dev_dir / "hsm" / "softhsm2.conf"
    probe = subprocess.run(
        [sys.executable, "-c", _COUNT_KEYS, str(dev_dir / "hsm" / "pin")],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) >= 1  # SoftHSM2 reads its conf once per process: a subprocess


_COUNT_KEYS = """
import sys, pkcs11
from plastron.devkit.softhsm import find_module
token = pkcs11.lib(str(find_module())).get_token(token_label="plastron-dev")
with token.open(user_pin=open(sys.argv[1]).read().strip()) as s:
    print(len(list(s.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))))
"""


def test_up_refuses_tpm_without_swtpm_in_one_line(dev_dir: Path, tmp_path: Path) -> None:
    up = dev("up", "-dir", str(dev_dir), "-attestor", "tpm", env=path_without_swtpm(tmp_path))
    assert up.returncode == 1
    assert up.stderr == (
        "plastron-dev: -attestor tpm needs swtpm: install dbus, swtpm, swtpm-tools, "
        "tpm2-abrmd, tpm2-tools\n"
    )
    assert up.stdout == ""


def test_up_refuses_without_softhsm_in_one_line(dev_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "PLASTRON_SOFTHSM2_MODULE": "/nonexistent.so"}
    up = dev("up", "-dir", str(dev_dir), "-attestor", "join_token", env=env)
    assert (up.returncode, up.stderr) == (
        1,
        "plastron-dev: SoftHSM2 is not installed: install the softhsm2 package\n",
    )
    assert ProcessBook(dev_dir).entries == []


def test_the_documented_shell_session_runs(dev_dir: Path) -> None:
    """docs/testing-with-plastron.md's ``sh`` block, run by bash as written (its -dir swapped for
    this test's directory): up, fetch, entry create, down. docs/cli.md shows up and down alone:
    its two commands are lines of that session."""
    blocks = blocks_tested_by(__file__, "test_the_documented_shell_session_runs")
    (shown_in_cli,) = [b for b in blocks if b.page.name == "cli.md"]
    (session,) = [b for b in blocks if b.page.name == "testing-with-plastron.md"]
    lines = session.text.splitlines()
    assert [step.command for step in console_steps(shown_in_cli)] == [lines[0], lines[-1]]
    script = session.text.replace("/tmp/plastron-ci", str(dev_dir))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"spiffe://example.org/dev/uid/{os.getuid()}" in run.stdout  # api fetch x509
    assert "spiffe://example.org/ci/app" in run.stdout  # entry create printed the entry
    assert ProcessBook(dev_dir).running() == []
