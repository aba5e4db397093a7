"""contrib/: the systemd units pass ``systemd-analyze verify`` (with and without their drop-ins)
and keep their hardening; every example configuration passes ``validate`` through the real CLI,
its paths are the ones the units give the service (validate reads the files a config names:
stand-ins are made in a copy of its directory), and every plugin in it that needs no HSM, TPM,
systemd host or pod service account is built by its real factory."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plastron.agent.config import load_agent_config
from plastron.agent.plugin_loading import agent_plugins
from plastron.configs.plugin_blocks import PluginConfig
from plastron.host_services import ConsumedToken, HostServices
from plastron.plugins import Registry, load_plugins
from plastron.server.config import load_server_config
from plastron.server.plugin_loading import SERVER_PLUGIN_MODULES
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.docs.hcl_fixtures import IN_A_POD

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "contrib" / "systemd"
CONFIGS = ROOT / "contrib" / "config"
SERVER_CONFIGS = sorted((CONFIGS / "server").glob("*.conf"))
AGENT_CONFIGS = sorted((CONFIGS / "agent").glob("*.conf"))
UNITS = ("plastron-server", "plastron-agent")
ANALYZE = shutil.which("systemd-analyze")
# Plugins that open hardware when built: their config is checked by validate only.
NEEDS_HARDWARE = {("KeyManager", "pkcs11"), ("KeyManager", "tpm")}
AGENT_NEEDS_HARDWARE = {("NodeAttestor", "tpm"), ("NodeAttestor", "tpm_devid")}
# Plugins that read their host when built: built only on such a host. validate refuses the
# systemd attestor on a host without systemd; the k8s attestor's config is validated in a mount
# namespace with a pod's service account (its kubelet CA and token), as validate reads them.
NEEDS_HOST_TO_VALIDATE = {("WorkloadAttestor", "systemd"): Path("/run/systemd/system")}
VALIDATED_IN_A_POD = 'WorkloadAttestor "k8s"'
NEEDS_HOST = NEEDS_HOST_TO_VALIDATE | {
    ("WorkloadAttestor", "k8s"): Path("/var/run/secrets/kubernetes.io/serviceaccount"),
}


def _missing_host(config: Path, needs: dict[tuple[str, str], Path]) -> str | None:
    """What the config's plugins need of their host and this machine lacks."""
    text = config.read_text()
    for (kind, name), path in needs.items():
        if f'{kind} "{name}"' in text and not path.exists():
            return f'{kind} "{name}" needs {path}'
    return None


def unit_settings(path: Path) -> dict[str, list[str]]:
    """key → every value it is given, in order (comments and sections dropped)."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def installed_copy(unit: str, dest: Path, drop_ins: list[Path]) -> Path:
    """The unit with ExecStart pointing at this install's script (verify checks that the
    binary exists) and its drop-ins appended, as systemd would merge them."""
    text = (SYSTEMD / f"{unit}.service").read_text()
    text = text.replace("/opt/plastron/bin/", f"{Path(sys.executable).parent}/")
    for drop_in in drop_ins:
        text += "\n" + drop_in.read_text()
    path = dest / f"{unit}.service"
    path.write_text(text)
    return path


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (package systemd)")
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("with_drop_ins", [False, True])
def test_unit_passes_systemd_analyze_verify(unit: str, with_drop_ins: bool, tmp_path: Path) -> None:
    drop_ins = sorted((SYSTEMD / f"{unit}.service.d").glob("*.conf")) if with_drop_ins else []
    path = installed_copy(unit, tmp_path, drop_ins)
    result = subprocess.run(
        [str(ANALYZE), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on an unknown key or a value it cannot parse, but says so on stderr
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened(unit: str) -> None:
    s = unit_settings(SYSTEMD / f"{unit}.service")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
        "StateDirectoryMode": "0700",
    }.items():
        assert s.get(key) == [value], (key, s.get(key))
    assert s["User"] != ["root"]
    assert s["RuntimeDirectory"] and s["StateDirectory"]


def test_agent_can_read_its_callers_proc() -> None:
    """hidepid would hide every other user's workload from the unix attestor."""
    s = unit_settings(SYSTEMD / "plastron-agent.service")
    assert "ProtectProc" not in s and "ProcSubset" not in s and "PrivateUsers" not in s
    assert s["RuntimeDirectoryMode"] == ["0755"]  # workloads reach the socket
    assert unit_settings(SYSTEMD / "plastron-server.service")["RuntimeDirectoryMode"] == ["0700"]


def _cli(role: str, config: Path) -> subprocess.CompletedProcess[str]:
    module = f"plastron.{role}.cli.main"
    command = [sys.executable, "-m", module, "validate", "-config", str(config)]
    if VALIDATED_IN_A_POD in config.read_text():
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("validating a pod's config needs root and unshare (a mount namespace)")
        script = f'mount -t tmpfs tmpfs /run && {IN_A_POD} && exec "$@"'
        command = ["unshare", "--mount", "bash", "-euo", "pipefail", "-c", script, "-", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_there_is_an_example_for_each_keymanager_and_attestor() -> None:
    text = "".join(p.read_text() for p in SERVER_CONFIGS + AGENT_CONFIGS)
    for name in ("memory", "disk", "pkcs11", "tpm"):
        assert f'KeyManager "{name}"' in text
    for name in ("join_token", "x509pop", "tpm", "tpm_devid", "aws_iid", "gcp_iit", "azure_msi"):
        assert f'NodeAttestor "{name}"' in text
    for name in ("unix", "docker", "k8s", "systemd"):
        assert f'WorkloadAttestor "{name}"' in text


@pytest.mark.parametrize(
    ("role", "config"),
    [("server", p) for p in SERVER_CONFIGS] + [("agent", p) for p in AGENT_CONFIGS],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_example_config_validates_and_matches_the_unit(
    role: str, config: Path, tmp_path: Path
) -> None:
    if (missing := _missing_host(config, NEEDS_HOST_TO_VALIDATE)) is not None:
        pytest.skip(f"validate reads the host: {missing}")
    result = _cli(role, _validatable_copy(role, config, tmp_path))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    s = unit_settings(SYSTEMD / f"plastron-{role}.service")
    loaded = (
        load_server_config(config, expand_env=False)
        if role == "server"
        else load_agent_config(config, expand_env=False)
    )
    assert loaded.data_dir == Path("/var/lib") / s["StateDirectory"][0]
    assert loaded.socket_path.parent == Path("/run") / s["RuntimeDirectory"][0]


def _ca_pem(name: str) -> tuple[bytes, bytes]:
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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _make_named_files(plugin: PluginConfig, base: Path) -> None:
    """Create the relative files a plugin names: certificates (with the key beside a
    ``.crt.pem``), a directory of one CA for an extension-less name, and TPM key blobs
    (``.priv``, ``.pub``: validate reads them, only the TPM parses them)."""
    cert_pem, key_pem = _ca_pem(plugin.name)
    for value in plugin.plugin_data.values():
        if not isinstance(value, str) or value.startswith("/") or "/" in value:
            continue
        target = base / value
        if value.endswith(".key.pem"):
            target.write_bytes(key_pem)
            target.chmod(0o600)
        elif value.endswith(".pem"):
            target.write_bytes(cert_pem)
        elif value.endswith((".priv", ".pub")):
            target.write_bytes(b"a stand-in TPM2B blob")
        elif "." not in value and value.endswith("cas"):
            target.mkdir(exist_ok=True)
            (target / "ca.pem").write_bytes(cert_pem)


def _copy_with_private_paths(config: Path, tmp_path: Path) -> Path:
    """The example's directory copied to tmp_path/etc, with /var/lib/plastron in the configs
    moved under tmp_path: building a disk KeyManager makes its directory."""
    base = tmp_path / "etc"
    shutil.copytree(config.parent, base)
    for copy in base.glob("*.conf"):
        copy.write_text(copy.read_text().replace("/var/lib/plastron", str(tmp_path / "state")))
    return base / config.name


def _validatable_copy(role: str, config: Path, tmp_path: Path) -> Path:
    """A copy of the example with the files it names made (validate reads them): /etc/plastron
    moved under tmp_path, stand-in certificates, keys and PIN files."""
    copy = _copy_with_private_paths(config, tmp_path)
    etc = tmp_path / "etc-plastron"
    etc.mkdir()
    copy.write_text(copy.read_text().replace("/etc/plastron", str(etc)))
    cert_pem, _ = _ca_pem("bundle")
    (etc / "bundle.pem").write_bytes(cert_pem)
    for pin in ("hsm.pin", "node.pin"):
        (etc / pin).write_text("1234\n")
        (etc / pin).chmod(0o600)
    loaded = (
        load_server_config(copy, expand_env=False)
        if role == "server"
        else load_agent_config(copy, expand_env=False)
    )
    for plugin in loaded.plugins:
        _make_named_files(plugin, copy.parent)
    return copy


async def _never_consumed(_token: str) -> ConsumedToken | None:
    return None


async def _never_attested(_agent_id: SpiffeId) -> bool:
    return False


async def _no_authorities() -> list[x509.Certificate]:
    return []


# What the server runtime offers its plugins (the real ones reach the datastore and the CA).
SERVER_SERVICES = HostServices(
    x509_authorities=_no_authorities,
    consume_join_token=_never_consumed,
    agent_attested=_never_attested,
)


@pytest.mark.parametrize("config", SERVER_CONFIGS, ids=lambda p: p.name)
def test_server_example_plugins_build(config: Path, tmp_path: Path) -> None:
    copy = _copy_with_private_paths(config, tmp_path)
    registries = load_plugins(SERVER_PLUGIN_MODULES)
    context = registries.context(
        trust_domain=TrustDomain("example.org"),
        data_dir=tmp_path / "data",
        base_dir=copy.parent,
        services=SERVER_SERVICES,
    )
    by_type: dict[str, Registry[Any]] = {
        "KeyManager": registries.key_managers,
        "NodeAttestor": registries.server_node_attestors,
        "UpstreamAuthority": registries.upstream_authorities,
    }
    for plugin in load_server_config(copy, expand_env=False).plugins:
        if plugin.type in by_type and (plugin.type, plugin.name) not in NEEDS_HARDWARE:
            _make_named_files(plugin, copy.parent)
            by_type[plugin.type].create(plugin, context)


@pytest.mark.parametrize("config", AGENT_CONFIGS, ids=lambda p: p.name)
def test_agent_example_plugins_build(config: Path, tmp_path: Path) -> None:
    copy = _copy_with_private_paths(config, tmp_path)
    registries = agent_plugins()
    context = registries.context(
        trust_domain=TrustDomain("example.org"),
        data_dir=tmp_path / "data",
        base_dir=copy.parent,
        services=HostServices(join_token="example-token"),
    )
    by_type: dict[str, Registry[Any]] = {
        "KeyManager": registries.key_managers,
        "NodeAttestor": registries.agent_node_attestors,
        "WorkloadAttestor": registries.workload_attestors,
    }
    hardware = NEEDS_HARDWARE | AGENT_NEEDS_HARDWARE
    for plugin in load_agent_config(copy, expand_env=False).plugins:
        if (plugin.type, plugin.name) in hardware or "private_key_uri" in plugin.plugin_data:
            continue  # opens a TPM or an HSM: checked by validate only
        host = NEEDS_HOST.get((plugin.type, plugin.name))
        if host is not None and not host.exists():
            continue  # reads the host (systemd, a pod's service account) when built
        _make_named_files(plugin, copy.parent)
        by_type[plugin.type].create(plugin, context)
