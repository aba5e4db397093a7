"""A configuration that needs an extra which is not installed fails with one line naming the
extra, at validate and at run, before anything is created; configurations that do not need it
work without it.

Each case runs the real CLI in a fresh interpreter in which the extra's module cannot be
imported (tests/unit/install/without_modules.py), as on an install without that extra.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RUNNER = HERE / "without_modules.py"
TIMEOUT = 120

SERVER = """
server {{
  bind_address = "127.0.0.1"
  bind_port = "18081"
  trust_domain = "example.org"
  data_dir = "{data_dir}"
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
{plugins}
}}
"""
AGENT = """
agent {{
  trust_domain = "example.org"
  server_address = "127.0.0.1"
  server_port = "18081"
  data_dir = "{data_dir}"
  socket_path = "{data_dir}/api.sock"
  insecure_bootstrap = true
}}
plugins {{
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
{plugins}
}}
"""
PKCS11_DATA = 'module_path = "/usr/lib/softhsm/libsofthsm2.so" token_label = "t" pin_env = "PIN"'


def run_without(
    blocked: str, role: str, tmp_path: Path, plugins: str, verb: str = "validate"
) -> subprocess.CompletedProcess[str]:
    template = SERVER if role == "server" else AGENT
    data_dir = tmp_path / "data"
    config = tmp_path / f"{role}.conf"
    config.write_text(template.format(data_dir=data_dir, plugins=plugins))
    return subprocess.run(
        [sys.executable, str(RUNNER), blocked, role, verb, "-config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr == f"Error: {expected}\n", result.stderr
    assert "Traceback" not in result.stdout


HSM = "needs the [hsm] extra: pip install 'plastron[hsm]'"
TPM = "needs the [tpm] extra: pip install 'plastron[tpm]'"

CASES = [
    (
        "pkcs11",
        "server",
        f'KeyManager "pkcs11" {{ plugin_data {{ {PKCS11_DATA} }} }}',
        f'KeyManager "pkcs11" {HSM}',
    ),
    (
        "pkcs11",
        "server",
        f'UpstreamAuthority "pkcs11" {{ plugin_data {{ {PKCS11_DATA} }} }}',
        f'UpstreamAuthority "pkcs11" {HSM}',
    ),
    (
        "psycopg",
        "server",
        'DataStore "sql" { plugin_data { database_type = "postgres"'
        ' connection_string = "dbname=spire" } }',
        'DataStore "sql" with database_type "postgres" needs the [postgres] extra:'
        " pip install 'plastron[postgres]'",
    ),
    (
        "pymysql",
        "server",
        'DataStore "sql" { plugin_data { database_type = "mysql"'
        ' connection_string = "root@tcp(127.0.0.1:3306)/spire" } }',
        'DataStore "sql" with database_type "mysql" needs the [mysql] extra:'
        " pip install 'plastron[mysql]'",
    ),
    (
        "boto3",
        "server",
        'NodeAttestor "aws_iid" { plugin_data {} }',
        "NodeAttestor \"aws_iid\" needs the [cloud] extra: pip install 'plastron[cloud]'",
    ),
    (
        "tpm2_pytss",
        "agent",
        'NodeAttestor "tpm" { plugin_data {} }\n  KeyManager "disk" { plugin_data {} }',
        f'NodeAttestor "tpm" {TPM}',
    ),
    (
        "tpm2_pytss",
        "agent",
        'NodeAttestor "tpm_devid" { plugin_data { devid_cert_path = "d.pem"'
        ' devid_priv_path = "d.priv" devid_pub_path = "d.pub" } }\n'
        '  KeyManager "disk" { plugin_data {} }',
        f'NodeAttestor "tpm_devid" {TPM}',
    ),
    (
        "tpm2_pytss",
        "agent",
        'NodeAttestor "join_token" { plugin_data {} }\n  KeyManager "tpm" { plugin_data {} }',
        f'KeyManager "tpm" {TPM}',
    ),
    (
        "pkcs11",
        "agent",
        f'NodeAttestor "join_token" {{ plugin_data {{}} }}\n'
        f'  KeyManager "pkcs11" {{ plugin_data {{ {PKCS11_DATA} }} }}',
        f'KeyManager "pkcs11" {HSM}',
    ),
]


@pytest.mark.parametrize(("blocked", "role", "plugins", "expected"), CASES)
def test_validate_names_the_missing_extra(
    blocked: str, role: str, plugins: str, expected: str, tmp_path: Path
) -> None:
    assert_one_line(run_without(blocked, role, tmp_path, plugins), expected)


@pytest.mark.parametrize(("blocked", "role", "plugins", "expected"), [CASES[0], CASES[4]])
def test_run_names_the_missing_extra_before_creating_anything(
    blocked: str, role: str, plugins: str, expected: str, tmp_path: Path
) -> None:
    assert_one_line(run_without(blocked, role, tmp_path, plugins, verb="run"), expected)
    assert not (tmp_path / "data").exists()


def _ca_pem(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_server_verifies_tpm_attestation_without_the_tpm_extra(tmp_path: Path) -> None:
    """The server halves of tpm and tpm_devid are pure Python: a server-only install without
    tpm2-pytss (nor python-pkcs11, nor the database drivers) accepts them."""
    plugins = (
        'NodeAttestor "tpm" { plugin_data { endorsement_ca_path = "ek-ca.pem" } }\n'
        '  NodeAttestor "tpm_devid" { plugin_data { devid_ca_path = "devid-ca.pem"'
        ' endorsement_ca_path = "ek-ca.pem" } }\n'
        '  NodeAttestor "x509pop" { plugin_data { ca_bundle_path = "ca.pem" } }\n'
        '  KeyManager "disk" { plugin_data {} }'
    )
    for name in ("ek-ca.pem", "devid-ca.pem", "ca.pem"):  # validate reads and parses them
        (tmp_path / name).write_bytes(_ca_pem(name))
    result = run_without("tpm2_pytss,pkcs11,psycopg,pymysql", "server", tmp_path, plugins)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout == "Configuration is valid.\n"


def test_an_installed_extra_that_does_not_load_says_why(tmp_path: Path) -> None:
    """tpm2-pytss installed without the libtss2 libraries raises ImportError from inside its
    own import: the line names the extra and the loader's reason."""
    fake = tmp_path / "site" / "tpm2_pytss"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        'raise ImportError("libtss2-esys.so.0: cannot open shared object file")\n'
    )
    config = tmp_path / "agent.conf"
    config.write_text(
        AGENT.format(
            data_dir=tmp_path / "data",
            plugins='NodeAttestor "tpm" { plugin_data {} }\n  KeyManager "disk" { plugin_data {} }',
        )
    )
    result = subprocess.run(
        [sys.executable, str(RUNNER), "", "agent", "validate", "-config", str(config)],
        cwd=ROOT,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert_one_line(
        result,
        'NodeAttestor "tpm" needs the [tpm] extra, which does not load'
        " (libtss2-esys.so.0: cannot open shared object file): pip install 'plastron[tpm]'",
    )
