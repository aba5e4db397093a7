"""The wheel: built with ``python -m build``, its metadata declares the base role and one extra
per optional role, and installed into a clean virtualenv (no system site-packages, nothing of
the development venv) it runs: ``--version``, ``validate`` with and without extras, and a real
server and agent handing a workload its X509-SVID.

The clean install downloads the base dependencies from the package index (pip's cache makes a
repeat take ~20 s). Without the index the test is skipped, unless CI is set: there it fails.
"""

from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import plastron
from tests.docs.doc_blocks import ConsoleStep, block_tested_by, console_steps
from tests.processes import free_port, poll, stop_process
from tests.unit.spiffe.spiffe_pki import make_root

ROOT = Path(__file__).resolve().parents[3]
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 600
CLI_TIMEOUT = 60
ROLE_EXTRAS = {"hsm", "tpm", "cloud", "k8s", "postgres", "mysql"}
NOT_IN_BASE = {"python-pkcs11", "tpm2-pytss", "psycopg", "pymysql", "grpcio", "boto3", "asn1crypto"}
OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "unreachable")


def _source_tree(dest: Path) -> Path:
    """A copy of the files git would commit (tracked and new, not ignored): the build never
    writes into the working tree, and leftovers (build/, egg-info) do not leak into it."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=CLI_TIMEOUT,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (make venv installs the dev extra)")
    base = tmp_path_factory.mktemp("wheel")
    source = _source_tree(base / "src")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(base)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = base.glob("plastron-*.whl")
    return built


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def _requirement_name(requirement: str) -> str:
    name = requirement.split(";", maxsplit=1)[0].strip()
    for stop in "[<>=!~ ":
        name = name.split(stop)[0]
    return name.lower()


def test_wheel_declares_the_base_role_and_one_extra_per_role(wheel: Path) -> None:
    metadata = _metadata(wheel)
    assert metadata["Version"] == plastron.__version__
    requirements = metadata.get_all("Requires-Dist") or []
    base = {_requirement_name(r) for r in requirements if "extra ==" not in r}
    assert base >= {"cryptography", "grpclib", "sqlalchemy", "alembic", "xds-protos"}
    assert base.isdisjoint(NOT_IN_BASE), sorted(base & NOT_IN_BASE)
    assert set(metadata.get_all("Provides-Extra") or []) >= ROLE_EXTRAS
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    # package data the runtimes read: the datastore migrations and their template, the typing
    # marker; no tests in the wheel
    migrations = "plastron/server/datastore/migrations/"
    assert f"{migrations}script.py.mako" in names
    assert any(n.startswith(f"{migrations}versions/0001_") for n in names)
    assert "plastron/py.typed" in names
    assert not any(n.startswith("tests/") for n in names)


@dataclass
class CleanVenv:
    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
            env=_clean_env(),
        )


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or virtualenv of the test run leaks into the clean one."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    path = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    # pip comes from this interpreter (--python targets the new venv); nothing else does
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
        env=_clean_env(),
    )  # fmt: skip
    if result.returncode != 0:
        offline = any(sign in result.stderr for sign in OFFLINE_SIGNS)
        if offline and not os.environ.get("CI"):
            pytest.skip(f"no package index: {result.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install of the wheel failed:\n{result.stderr[-4000:]}")
    return CleanVenv(path)


def run_console_step(venv: CleanVenv, step: ConsoleStep, cwd: Path) -> None:
    """A documented ``$ command`` in the clean venv: its output is the one the page shows, and
    it fails exactly when what the page shows is an error."""
    env = {**_clean_env(), "PATH": f"{venv.path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", step.command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
        env=env,
    )
    shown = "".join(f"{line}\n" for line in step.shown_output)
    expected_status = 1 if shown.startswith("Error:") else 0
    assert (done.returncode, done.stdout + done.stderr) == (expected_status, shown), step.command


def test_clean_install_reports_its_version_and_has_no_extra(
    clean_venv: CleanVenv, tmp_path: Path
) -> None:
    block = block_tested_by(__file__, "test_clean_install_reports_its_version_and_has_no_extra")
    steps = console_steps(block)
    assert [s.command for s in steps] == ["plastron-server --version", "plastron-agent --version"]
    for step in steps:
        assert step.shown_output == [plastron.__version__], "install.md shows another version"
        run_console_step(clean_venv, step, tmp_path)
    probe = clean_venv.run(
        clean_venv.bin("python"),
        "-c",
        "import importlib.util as u, json; print(json.dumps([m for m in "
        "('pkcs11', 'tpm2_pytss', 'psycopg', 'pymysql', 'boto3') if u.find_spec(m)]))",
    )
    assert probe.stdout.strip() == "[]", probe


SERVER_CONF = """
server {{
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port = {port}
  socket_path = "{base}/server.sock"
  data_dir = "{base}/server"
}}
plugins {{
  DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" }} }}
  KeyManager "{key_manager}" {{ plugin_data {{ {key_manager_data} }} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"""
AGENT_CONF = """
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  server_port = {port}
  data_dir = "{base}/agent"
  socket_path = "{base}/agent.sock"
  trust_bundle_path = "{base}/bundle.pem"
}}
plugins {{
  NodeAttestor "{attestor}" {{ plugin_data {{}} }}
  KeyManager "disk" {{ plugin_data {{ directory = "{base}/agent" }} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"""


def test_clean_install_names_the_missing_extras(clean_venv: CleanVenv, tmp_path: Path) -> None:
    """install.md's transcript, each command on the config it needs."""
    block = block_tested_by(__file__, "test_clean_install_names_the_missing_extras")
    pkcs11 = 'module_path = "/usr/lib/softhsm/libsofthsm2.so" token_label = "t"'
    hsm_server = SERVER_CONF.format(
        port=18081, base=tmp_path, key_manager="pkcs11", key_manager_data=pkcs11
    )
    postgres_server = SERVER_CONF.format(
        port=18081,
        base=tmp_path,
        key_manager="disk",
        key_manager_data=f'directory = "{tmp_path}/k"',
    ).replace('database_type = "sqlite3"', 'database_type = "postgres" connection_string = "x"')
    # validate reads the bootstrap bundle too: give it one, so the extra is what is missing
    root = make_root(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "bundle.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "agent.conf").write_text(
        AGENT_CONF.format(port=18081, base=tmp_path, attestor="tpm")
    )
    steps = console_steps(block)
    assert len(steps) == 3, [s.command for s in steps]
    for step, server_conf in zip(steps, (hsm_server, postgres_server, None), strict=True):
        if server_conf is not None:
            (tmp_path / "server.conf").write_text(server_conf)
        run_console_step(clean_venv, step, tmp_path)
    assert not (tmp_path / "server").exists()  # run refused before creating data_dir


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        stop_process(proc)


def test_clean_install_serves_a_workload_its_svid(
    clean_venv: CleanVenv, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The base install end to end: server (SQLite, disk keys), join token, agent, entry for
    this uid, and ``plastron-agent api fetch x509`` over the Workload API."""
    port = free_port()
    conf = tmp_path / "server.conf"
    conf.write_text(
        SERVER_CONF.format(port=port, base=tmp_path, key_manager="disk", key_manager_data="")
    )
    server = clean_venv.bin("plastron-server")
    sock = str(tmp_path / "server.sock")
    log = (tmp_path / "server.log").open("wb")
    processes.append(
        subprocess.Popen(
            [server, "run", "-config", str(conf)], stdout=log, stderr=log, env=_clean_env()
        )
    )
    poll(
        "server healthy",
        lambda: clean_venv.run(server, "healthcheck", "-socketPath", sock).returncode == 0,
    )
    bundle = clean_venv.run(server, "bundle", "show", "-socketPath", sock)
    (tmp_path / "bundle.pem").write_text(bundle.stdout)
    token = clean_venv.run(
        server, "token", "generate", "-spiffeID", "spiffe://example.org/node", "-socketPath", sock
    )
    assert token.returncode == 0, token
    entry = clean_venv.run(
        server, "entry", "create", "-parentID", "spiffe://example.org/node",
        "-spiffeID", "spiffe://example.org/web", "-selector", f"unix:uid:{os.getuid()}",
        "-socketPath", sock,
    )  # fmt: skip
    assert entry.returncode == 0, entry
    agent_conf = tmp_path / "agent.conf"
    agent_conf.write_text(AGENT_CONF.format(port=port, base=tmp_path, attestor="join_token"))
    agent = clean_venv.bin("plastron-agent")
    agent_log = (tmp_path / "agent.log").open("wb")
    join_token = token.stdout.split("Token:")[1].split()[0]
    processes.append(
        subprocess.Popen(
            [agent, "run", "-config", str(agent_conf), "-joinToken", join_token],
            stdout=agent_log,
            stderr=agent_log,
            env=_clean_env(),
        )
    )
    agent_sock = str(tmp_path / "agent.sock")

    def fetched() -> str | None:
        result = clean_venv.run(agent, "api", "fetch", "x509", "-socketPath", agent_sock)
        return result.stdout if result.returncode == 0 else None

    out = poll("workload X509-SVID", fetched)
    assert "spiffe://example.org/web" in out
