"""SPIRE's ``run`` override flags, command line over file, with real processes: a server whose
file names another trust domain, port, socket and data_dir serves what its flags say, and an
agent whose file points at none of it attests with ``-serverAddress -serverPort -trustDomain
-dataDir -socketPath -trustBundle -joinTokenFile`` and serves a workload its SVID."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import BIN, TD, AgentProcess, Proc, ServerProcess, poll
from cryptography import x509

from tests.processes import free_port

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pov-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _server_with_overrides(base: Path) -> ServerProcess:
    """A server whose file says wrong.org, another port, socket and data_dir; the flags give
    the ones the harness (and the agent) use."""
    server = ServerProcess(base, td="wrong.org")
    text = server.config.read_text()
    text = text.replace(f"bind_port = {server.port}", f"bind_port = {free_port()}")
    text = text.replace(f'socket_path = "{server.socket_path}"', f'socket_path = "{base}/f.sock"')
    text = text.replace(f'data_dir = "{base}/server-data"', f'data_dir = "{base}/file-data"')
    server.config.write_text(text)
    server.td = TD
    server.proc = Proc(
        [
            str(BIN / "plastron-server"), "run", "-config", str(server.config),
            "-trustDomain", TD, "-serverPort", str(server.port),
            "-socketPath", server.socket_path, "-dataDir", f"{base}/server-data",
            "-bindAddress", "127.0.0.1", "-logFormat", "json",
        ],
        base / "server.log",
    )  # fmt: skip
    return server


def test_server_and_agent_run_with_what_their_flags_say(base: Path) -> None:
    server = _server_with_overrides(base)
    server.start()  # healthy on the -socketPath socket
    try:
        bundle = x509.load_pem_x509_certificates(server.cli("bundle", "show").stdout.encode())
        sans = bundle[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
        assert (base / "server-data").is_dir() and not (base / "file-data").exists()
        log_lines = (base / "server.log").read_text().splitlines()
        assert log_lines and all(line.startswith("{") for line in log_lines)  # -logFormat json

        agent = AgentProcess(base, server)
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        (base / "token").write_text(server.join_token(NODE) + "\n")
        (base / "token").chmod(0o600)
        real_socket, real_data = agent.socket_path, agent.data_dir
        text = agent.config.read_text()
        for right, wrong in (
            (f'trust_domain = "{TD}"', 'trust_domain = "wrong.org"'),
            ('server_address = "127.0.0.1"', 'server_address = "unreachable.invalid"'),
            (f"server_port = {server.port}", f"server_port = {free_port()}"),
            (f'socket_path = "{real_socket}"', f'socket_path = "{base}/f-agent.sock"'),
            (f'trust_bundle_path = "{base}/bootstrap.pem"', f'trust_bundle_path = "{base}/no"'),
        ):
            assert right in text
            text = text.replace(right, wrong)
        agent.config.write_text(text)
        flags = [
            "-serverAddress", "127.0.0.1", "-serverPort", str(server.port), "-trustDomain", TD,
            "-dataDir", str(real_data), "-socketPath", real_socket,
            "-trustBundle", f"{base}/bootstrap.pem", "-joinTokenFile", f"{base}/token",
        ]  # fmt: skip
        validated = subprocess.run(
            [str(BIN / "plastron-agent"), "validate", "-config", str(agent.config), *flags],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert validated.returncode == 0, validated.stderr
        agent.proc = Proc(
            [str(BIN / "plastron-agent"), "run", "-config", str(agent.config), *flags],
            base / "agent.log",
        )
        agent.proc.start()
        try:
            poll("workload SVID", lambda: WORKLOAD in agent.cli("api", "fetch", "x509").stdout)
        finally:
            agent.stop()
    finally:
        server.stop()


def test_a_bad_flag_value_is_named_by_validate_and_run_alike(base: Path) -> None:
    server = ServerProcess(base)
    for verb in ("validate", "run"):
        result = subprocess.run(
            [str(BIN / "plastron-server"), verb, "-config", str(server.config),
             "-trustDomain", "Not A Domain"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: -trustDomain is not a valid trust domain"), line


def test_log_level_flag_over_the_file_sets_what_is_logged(base: Path) -> None:
    """The file says INFO; -logLevel warn leaves the start-up INFO lines out."""
    server = ServerProcess(base)
    assert 'log_level = "INFO"' in server.config.read_text()
    server.proc = Proc(
        [str(BIN / "plastron-server"), "run", "-config", str(server.config), "-logLevel", "warn"],
        base / "quiet.log",
    )
    server.start()
    server.stop()
    quiet = (base / "quiet.log").read_text()
    assert "level=info" not in quiet, quiet
    loud = ServerProcess(base)  # the same file, no flag
    loud.proc = Proc(
        [str(BIN / "plastron-server"), "run", "-config", str(loud.config)], base / "loud.log"
    )
    loud.start()
    loud.stop()
    assert "level=info" in (base / "loud.log").read_text()
