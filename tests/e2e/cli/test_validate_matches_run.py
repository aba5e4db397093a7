"""``validate`` checks what ``run`` checks: each bad config of the table is refused by
``validate`` and by ``run`` with the same one line, before ``run`` opens anything; a good
config passes ``validate`` (with SPIRE's TTL warning) and ``run`` serves with it. Real
``plastron-server`` and ``plastron-agent`` processes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import PlastronServerProcess
from tests.pki import CA_KEY_USAGE, self_signed
from tests.processes import free_port

TIMEOUT = 60.0
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def _write_ca(base: Path) -> None:
    self_signed(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "upstream")]),
        lifetime=dt.timedelta(days=30),
        ca=True,
        key_usage=CA_KEY_USAGE,
    ).write(base / "ca.pem", base / "ca.key", key_mode=0o600)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    # Unix socket paths are short: keep the tree under a short directory.
    _write_ca(tmp_path)
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "open.pin").write_text("1234\n")
    os.chmod(tmp_path / "open.pin", 0o644)
    (tmp_path / "shared").mkdir(mode=0o755)
    os.chmod(tmp_path / "shared", 0o755)
    return tmp_path


def _server_conf(
    base: Path, *, server: str = "", plugins: str = "", data: str = "data", port: int = 0
) -> str:
    return f"""
server {{
  trust_domain = "example.org"
  bind_address = "127.0.0.1"
  bind_port = {port or free_port()}
  socket_path = "{base}/api.sock"
  data_dir = "{base}/{data}"
  {server}
}}
plugins {{
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  {plugins}
}}
"""


# (id, config builder, a fragment the one line must hold)
ServerCase = tuple[str, Callable[[Path], str], str]
SERVER_CASES: list[ServerCase] = [
    (
        "unknown plugin",
        lambda b: _server_conf(b, plugins='NodeAttestor "nope" { plugin_data {} }'),
        '"nope"',
    ),
    (
        "unknown plugin_data key",
        lambda b: _server_conf(
            b,
            plugins=f'NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_pth = "{b}/ca.pem" }} }}',
        ),
        "ca_bundle_pth",
    ),
    (
        "plugin_data value",
        lambda b: _server_conf(
            b,
            plugins=f'NodeAttestor "x509pop" {{ plugin_data {{ mode = "sideways"'
            f' ca_bundle_path = "{b}/ca.pem" }} }}',
        ),
        "mode",
    ),
    (
        "missing file",
        lambda b: _server_conf(
            b,
            plugins=f'NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{b}/no.pem" }} }}',
        ),
        "no.pem",
    ),
    (
        "unparseable file",
        lambda b: _server_conf(
            b,
            plugins='UpstreamAuthority "disk" { plugin_data {'
            f' cert_file_path = "{b}/garbage.pem" key_file_path = "{b}/ca.key" }} }}',
        ),
        "cert_file_path",
    ),
    (
        "pin file open to others",
        lambda b: _server_conf(
            b,
            plugins='UpstreamAuthority "pkcs11" { plugin_data {'
            f' module_path = "{SOFTHSM}" token_label = "t" pin_file = "{b}/open.pin" }} }}',
        ),
        "open.pin",
    ),
    (
        "hsm module missing",
        lambda b: _server_conf(
            b,
            plugins='UpstreamAuthority "pkcs11" { plugin_data {'
            ' module_path = "/nonexistent/libpkcs11.so" token_label = "t" pin_env = "HOME" } }',
        ),
        "/nonexistent/libpkcs11.so",
    ),
    (
        "connection string shape",
        lambda b: _server_conf(
            b,
            plugins='DataStore "sql" { plugin_data { database_type = "mysql"'
            ' connection_string = "root@tcp(127.0.0.1:3306/spire" } }',
        ),
        "connection_string",
    ),
    (
        "agentless serving cert missing",
        lambda b: _server_conf(
            b,
            server="agentless_exchange { serving_cert_file {"
            f' cert_file_path = "{b}/nocert.pem" key_file_path = "{b}/ca.key" }} }}',
        ),
        "server.agentless_exchange.serving_cert_file: cannot load",
    ),
    (
        "agentless serving cert unparseable",
        lambda b: _server_conf(
            b,
            server="agentless_exchange { serving_cert_file {"
            f' cert_file_path = "{b}/garbage.pem" key_file_path = "{b}/ca.key" }} }}',
        ),
        "garbage.pem",
    ),
    (
        "mysql root CA missing",
        lambda b: _server_conf(
            b,
            plugins='DataStore "sql" { plugin_data { database_type = "mysql"'
            ' connection_string = "root@tcp(127.0.0.1:3306)/spire"'
            f' root_ca_path = "{b}/noca.pem" }} }}',
        ),
        "root_ca_path",
    ),
    (
        "mysql client key unparseable",
        lambda b: _server_conf(
            b,
            plugins='DataStore "sql" { plugin_data { database_type = "mysql"'
            ' connection_string = "root@tcp(127.0.0.1:3306)/spire"'
            f' client_cert_path = "{b}/ca.pem" client_key_path = "{b}/garbage.pem" }} }}',
        ),
        "client_key_path",
    ),
    (
        "log_file directory missing",
        lambda b: _server_conf(b, server=f'log_file = "{b}/nologs/server.log"'),
        "nologs/server.log: No such file or directory",
    ),
    (
        "data_dir open to others",
        lambda b: _server_conf(b, data="shared"),
        "shared",
    ),
    (
        "unsupported key",
        lambda b: _server_conf(b, server="profiling_enabled = true"),
        "not supported by Plastron: server.profiling_enabled",
    ),
]


def _cli(module: str, verb: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, verb, "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str], verb: str) -> str:
    assert result.returncode == 1, f"{verb}: rc={result.returncode} stderr={result.stderr!r}"
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, f"{verb}: {result.stderr!r}"
    return lines[0]


def _same_refusal(module: str, config: Path, cwd: Path, fragment: str) -> None:
    validated = _one_line(_cli(module, "validate", config, cwd), "validate")
    ran = _one_line(_cli(module, "run", config, cwd), "run")
    assert validated == ran
    assert fragment in validated, validated


@pytest.mark.parametrize(
    ("case", "build", "fragment"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES]
)
def test_server_validate_and_run_refuse_alike(
    base: Path, case: str, build: Callable[[Path], str], fragment: str
) -> None:
    config = base / "server.conf"
    config.write_text(build(base))
    _same_refusal("plastron.server.cli.main", config, base, fragment)
    assert not (base / "data").exists()  # refused before anything was made


def test_good_server_config_passes_validate_with_the_ttl_warning_and_runs(base: Path) -> None:
    port = free_port()
    text = _server_conf(
        base,
        server='ca_ttl = "24h"\n  default_x509_svid_ttl = "12h"',
        plugins=f'NodeAttestor "x509pop" {{ plugin_data {{ ca_bundle_path = "{base}/ca.pem" }} }}\n'
        f'  UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{base}/ca.pem"'
        f' key_file_path = "{base}/ca.key" }} }}',
        port=port,
    )
    config = base / "server.conf"
    config.write_text(text)
    validated = _cli("plastron.server.cli.main", "validate", config, base)
    assert validated.returncode == 0, validated.stderr
    # agent_ttl defaults to default_x509_svid_ttl, so SPIRE warns about both
    warned = [line.split(" (")[0] for line in validated.stderr.splitlines()]
    assert warned == ["Warning: default_x509_svid_ttl", "Warning: agent_ttl"], validated.stderr
    server = PlastronServerProcess(
        base=base,
        config_path=config,
        data_dir=base / "data",
        port=port,
        socket_path=str(base / "api.sock"),
        log_path=base / "server.log",
        env=dict(os.environ),
    )
    try:
        server.start()  # polls the admin socket's health check, with a deadline
    finally:
        server.stop()


def _agent_conf(base: Path, *, agent: str = "", plugins: str = "", data: str = "agent") -> str:
    bundle = "" if "trust_bundle_path" in agent else f'trust_bundle_path = "{base}/ca.pem"'
    return f"""
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  server_port = {free_port()}
  socket_path = "{base}/agent.sock"
  data_dir = "{base}/{data}"
  join_token = "3f1c2b7e-6a8d-4d0a-9b1c-2e4f6a8b0c1d"
  {bundle}
  {agent}
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  {plugins or 'WorkloadAttestor "unix" { plugin_data {} }'}
}}
"""


AGENT_CASES: list[ServerCase] = [
    (
        "unknown plugin_data key",
        lambda b: _agent_conf(
            b, plugins='WorkloadAttestor "unix" { plugin_data { discover = 1 } }'
        ),
        "discover",
    ),
    (
        "trust bundle missing",
        lambda b: _agent_conf(b, agent=f'trust_bundle_path = "{b}/nobundle.pem"'),
        "nobundle.pem",
    ),
    (
        "trust bundle unparseable",
        lambda b: _agent_conf(b, agent=f'trust_bundle_path = "{b}/garbage.pem"'),
        "",
    ),
    (
        "join token file missing",
        lambda b: _agent_conf(b).replace(
            'join_token = "3f1c2b7e-6a8d-4d0a-9b1c-2e4f6a8b0c1d"',
            f'join_token_file = "{b}/notoken"',
        ),
        "notoken",
    ),
    (
        "x509pop certificate missing",
        lambda b: _agent_conf(
            b,
            plugins='NodeAttestor "x509pop" { plugin_data {'
            f' certificate_path = "{b}/nocert.pem" private_key_path = "{b}/ca.key" }} }}',
        ).replace('NodeAttestor "join_token" { plugin_data {} }', ""),
        "certificate_path",
    ),
    (
        "x509pop key unparseable",
        lambda b: _agent_conf(
            b,
            plugins='NodeAttestor "x509pop" { plugin_data {'
            f' certificate_path = "{b}/ca.pem" private_key_path = "{b}/garbage.pem" }} }}',
        ).replace('NodeAttestor "join_token" { plugin_data {} }', ""),
        "garbage.pem",
    ),
    (
        "tpm_devid certificate missing",
        lambda b: _agent_conf(
            b,
            plugins='NodeAttestor "tpm_devid" { plugin_data {'
            f' devid_cert_path = "{b}/nodevid.pem" devid_priv_path = "{b}/ca.key"'
            f' devid_pub_path = "{b}/ca.key" }} }}',
        ).replace('NodeAttestor "join_token" { plugin_data {} }', ""),
        "devid_cert_path",
    ),
    (
        "k8s kubelet CA missing",
        lambda b: _agent_conf(
            b,
            plugins='WorkloadAttestor "k8s" { plugin_data { node_name = "n"'
            f' kubelet_ca_path = "{b}/noca.pem" token_path = "{b}/open.pin" }} }}',
        ),
        "noca.pem",
    ),
    (
        "log_file directory missing",
        lambda b: _agent_conf(b, agent=f'log_file = "{b}/nologs/agent.log"'),
        "nologs/agent.log: No such file or directory",
    ),
    ("data_dir open to others", lambda b: _agent_conf(b, data="shared"), "shared"),
    (
        "unsupported plugin type",
        lambda b: _agent_conf(b, plugins='SVIDStore "aws" { plugin_data {} }'),
        "not supported by Plastron: plugins.SVIDStore",
    ),
]


@pytest.mark.parametrize(
    ("case", "build", "fragment"), AGENT_CASES, ids=[c[0] for c in AGENT_CASES]
)
def test_agent_validate_and_run_refuse_alike(
    base: Path, case: str, build: Callable[[Path], str], fragment: str
) -> None:
    config = base / "agent.conf"
    config.write_text(build(base))
    _same_refusal("plastron.agent.cli.main", config, base, fragment)
    assert not (base / "agent").exists()
