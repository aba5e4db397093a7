"""A fresh software TPM for the dev agent: a manufacturer CA made here, ``swtpm_setup`` giving
the TPM EK certificates it signs, ``swtpm socket`` serving it, and tpm2-abrmd (with a private
D-Bus session daemon) in front as the resource manager a host has in ``/dev/tpmrm0`` — the
agent's ``tpm`` attestor and KeyManager and its TLS stack share the TPM through it.

``make_manufacturer_ca`` and ``manufacture`` are also what the test suite's swtpm fixtures use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plastron.devkit.processes import DevKitError, ProcessBook, poll
from plastron.spiffe.x509mint import CA_KEY_USAGE

START_DEADLINE_S = 20.0
EK_CERT_FILE = "ek-rsa2048.crt"  # the EK the agent's ek_type "auto" picks first
QUOTED_PCRS = (0, 7)
# Each tool and the Debian/Ubuntu package that provides it.
TOOLS = {
    "swtpm": "swtpm",
    "swtpm_setup": "swtpm-tools",
    "swtpm_localca": "swtpm-tools",
    "tpm2-abrmd": "tpm2-abrmd",
    "tpm2_getrandom": "tpm2-tools",
    "dbus-daemon": "dbus",
}


@dataclass(frozen=True)
class ManufacturerCa:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    dir: Path  # holds ca-key.pem and ca-cert.pem

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def missing_packages() -> list[str]:
    """The packages whose tools are not on PATH (empty when a swtpm can be run)."""
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})


def make_manufacturer_ca(
    directory: Path, cn: str = "Plastron Test TPM Manufacturer"
) -> ManufacturerCa:
    """An EC P-256 "TPM manufacturer" root, written as ca-key.pem and ca-cert.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # swtpm_localca reads the signing key as a traditional "EC PRIVATE KEY" PEM.
    key_file = directory / "ca-key.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (directory / "ca-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ManufacturerCa(key, cert, directory)


def _write_setup_config(conf_dir: Path, ca: ManufacturerCa) -> Path:
    localca = conf_dir / "localca"
    localca.mkdir(parents=True, exist_ok=True)
    (conf_dir / "swtpm-localca.conf").write_text(
        f"statedir = {localca}\n"
        f"signingkey = {ca.dir / 'ca-key.pem'}\n"
        f"issuercert = {ca.dir / 'ca-cert.pem'}\n"
        f"certserial = {localca / 'certserial'}\n"
    )
    (conf_dir / "swtpm-localca.options").write_text(
        "--platform-manufacturer Plastron\n--platform-version 2.1\n--platform-model TestBox\n"
    )
    setup = conf_dir / "swtpm_setup.conf"
    setup.write_text(
        "create_certs_tool = /usr/bin/swtpm_localca\n"
        f"create_certs_tool_config = {conf_dir / 'swtpm-localca.conf'}\n"
        f"create_certs_tool_options = {conf_dir / 'swtpm-localca.options'}\n"
        "active_pcr_banks = sha256\n"
    )
    return setup


def manufacture(state_dir: Path, ca: ManufacturerCa, *, ek_certs: bool = True) -> Path:
    """Run swtpm_setup into ``state_dir``: fresh EKs, certificates signed by ``ca`` (also written
    as ``ek-rsa2048.crt``/``ek-secp384r1.crt`` in ``<state_dir>-conf``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conf_dir = state_dir.parent / f"{state_dir.name}-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    setup = _write_setup_config(conf_dir, ca)
    cmd = ["swtpm_setup", "--tpm2", "--tpmstate", str(state_dir), "--config", str(setup)]
    cmd += ["--pcr-banks", "sha256", "--overwrite"]
    if ek_certs:
        cmd += ["--create-ek-cert", "--write-ek-cert-files", str(conf_dir)]
    else:
        cmd += ["--createek"]
    env = dict(os.environ, XDG_CONFIG_HOME=str(conf_dir))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"swtpm_setup failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return state_dir


def ek_pubhash(cert_file: Path) -> str:
    """sha256 hex of the EK certificate's SubjectPublicKeyInfo (the ``tpm:ek_pubhash`` value)."""
    data = cert_file.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True)
class DevTpm:
    """A running swtpm behind tpm2-abrmd: what the server and agent configs need."""

    endorsement_ca_path: Path  # the manufacturer CA the server trusts (PEM)
    ek_pubhash: str
    tcti: str  # the tpm2-abrmd in front of the swtpm
    bus_address: str  # its private D-Bus session bus

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address}

    @property
    def node_selector(self) -> str:
        return f"tpm:ek_pubhash:{self.ek_pubhash}"

    def agent_id(self, trust_domain: str) -> str:
        return f"spiffe://{trust_domain}/spire/agent/tpm/{self.ek_pubhash}"

    def server_attestor_block(self) -> str:
        pcrs = ", ".join(str(p) for p in QUOTED_PCRS)
        return (
            f'NodeAttestor "tpm" {{ plugin_data {{ '
            f'endorsement_ca_path = "{self.endorsement_ca_path}" pcrs = [{pcrs}] }} }}'
        )

    def agent_attestor_block(self) -> str:
        return f'NodeAttestor "tpm" {{ plugin_data {{ tcti = "{self.tcti}" }} }}'

    def agent_key_manager_block(self) -> str:
        return f'KeyManager "tpm" {{ plugin_data {{ tcti = "{self.tcti}" }} }}'


def _socket_accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _exited(proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-300:].strip() if log.exists() else ""
        raise DevKitError(f"{what} exited with code {proc.returncode}: {tail}")


def _start_swtpm(book: ProcessBook, state: Path) -> str:
    sock = state / "tpm.sock"
    cmd = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}"]
    cmd += ["--server", f"type=unixio,path={sock}", "--ctrl", f"type=unixio,path={sock}.ctrl"]
    cmd += ["--flags", "not-need-init,startup-clear"]
    log = state.parent / "swtpm.log"
    proc = book.start("swtpm", cmd, log)

    def ready() -> bool:
        _exited(proc, "swtpm", log)
        return _socket_accepts(sock)

    poll("swtpm to open its socket", ready, START_DEADLINE_S)
    return f"swtpm:path={sock}"


def _start_abrmd(book: ProcessBook, swtpm_tcti: str, base: Path) -> tuple[str, str]:
    bus = base / "bus"
    address = f"unix:path={bus}"
    dbus_log = base / "dbus.log"
    dbus = book.start(
        "dbus-daemon",
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address={address}"],
        dbus_log,
    )

    def bus_open() -> bool:
        _exited(dbus, "dbus-daemon", dbus_log)
        return bus.exists()

    poll("dbus-daemon to open its socket", bus_open, START_DEADLINE_S)
    bus_name = f"com.intel.tss2.Tabrmd.dev{secrets.token_hex(6)}"
    tcti = f"tabrmd:bus_name={bus_name},bus_type=session"
    env = {"DBUS_SESSION_BUS_ADDRESS": address}
    cmd = ["tpm2-abrmd", "--session", f"--dbus-name={bus_name}", f"--tcti={swtpm_tcti}"]
    cmd.append("--flush-all")
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    abrmd_log = base / "tpm2-abrmd.log"
    abrmd = book.start("tpm2-abrmd", cmd, abrmd_log, env)

    def answers() -> bool:
        _exited(abrmd, "tpm2-abrmd", abrmd_log)
        probe = subprocess.run(
            ["tpm2_getrandom", "-T", tcti, "--hex", "4"],
            env={**os.environ, **env},
            capture_output=True,
            timeout=10,
            check=False,
        )
        return probe.returncode == 0

    poll("tpm2-abrmd to answer", answers, START_DEADLINE_S)
    return tcti, address


def start_dev_tpm(book: ProcessBook, base: Path) -> DevTpm:
    """Manufacture a TPM under ``base`` and serve it behind tpm2-abrmd (processes in ``book``)."""
    ca = make_manufacturer_ca(base / "manufacturer-ca", cn="Plastron Dev TPM Manufacturer")
    try:
        state = manufacture(base / "state", ca)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise DevKitError(f"could not manufacture the dev TPM: {exc}") from exc
    pubhash = ek_pubhash(state.parent / f"{state.name}-conf" / EK_CERT_FILE)
    swtpm_tcti = _start_swtpm(book, state)
    tcti, address = _start_abrmd(book, swtpm_tcti, base)
    return DevTpm(ca.dir / "ca-cert.pem", pubhash, tcti, address)
