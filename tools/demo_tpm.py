"""A swtpm for ``make demo``: the agent attests with the ``tpm`` method (EK credential
activation + PCR quote) instead of a join token when swtpm is installed.

    tpm = prepare_swtpm(work)               # None-free: raises DemoTpmError if it cannot
    server conf:  tpm.server_attestor_block()   NodeAttestor "tpm" { endorsement_ca_path, pcrs }
    agent conf:   tpm.agent_attestor_block()    NodeAttestor "tpm" { tcti }
                  tpm.agent_key_manager_block()  KeyManager "tpm" { tcti } (the agent SVID key
                                                 in the TPM, TLS signed there)
    agent env:    tpm.env                       the tpm2-abrmd session bus
    node alias:   plastron-server entry create -node -spiffeID <alias> -selector tpm.node_selector
    expected ID:  tpm.agent_id("example.org")
    finally:      tpm.stop()

The manufacturer CA is made here; ``swtpm_setup --create-ek-cert`` gives the TPM an RSA-2048 and
an ECC P-384 EK certificate signed by it; ``swtpm socket`` serves the state on a unix socket and
tpm2-abrmd stands in front of it as the resource manager a host has in ``/dev/tpmrm0`` (the agent
and its TLS stack share the TPM).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "swtpm-tests"))

from swtpm_manufacture import SwtpmProcess, make_manufacturer_ca, manufacture
from tpm_resource_manager import AbrmdProcess

EK_CERT_FILE = "ek-rsa2048.crt"  # the EK the agent's ek_type "auto" picks first
QUOTED_PCRS = (0, 7)


class DemoTpmError(Exception):
    pass


def swtpm_available() -> bool:
    """swtpm and swtpm_setup are on PATH (the Makefile installs them with swtpm-tools)."""
    return all(
        shutil.which(tool)
        for tool in ("swtpm", "swtpm_setup", "swtpm_localca", "tpm2-abrmd", "dbus-daemon")
    )


@dataclass
class SwtpmForDemo:
    endorsement_ca_path: Path  # the manufacturer CA the server trusts (PEM)
    ek_pubhash: str  # sha256 hex of the EK SubjectPublicKeyInfo: the agent ID's last segment
    process: SwtpmProcess
    resource_manager: AbrmdProcess

    @property
    def tcti(self) -> str:
        """What the agent's NodeAttestor and KeyManager "tpm" take: the tpm2-abrmd in front."""
        return self.resource_manager.tcti

    @property
    def env(self) -> dict[str, str]:
        return self.resource_manager.env

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

    def stop(self) -> None:
        self.resource_manager.stop()
        self.process.stop()


def _ek_pubhash(cert_file: Path) -> str:
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


def prepare_swtpm(work: Path) -> SwtpmForDemo:
    """Manufacture a TPM under ``work/tpm`` and serve it behind tpm2-abrmd; ``stop()`` ends both.

    Unix socket paths are limited to ~107 bytes: ``work`` should be a short path (mkdtemp)."""
    if not swtpm_available():
        raise DemoTpmError(
            "swtpm, swtpm_setup, swtpm_localca, tpm2-abrmd and dbus-daemon are needed"
            " (make system-deps)"
        )
    base = work / "tpm"
    ca = make_manufacturer_ca(base / "manufacturer-ca", cn="Plastron Demo TPM Manufacturer")
    try:
        state = manufacture(base / "state", ca)
    except (RuntimeError, OSError) as exc:
        raise DemoTpmError(f"could not manufacture the demo TPM: {exc}") from exc
    ek_pubhash = _ek_pubhash(state.parent / f"{state.name}-conf" / EK_CERT_FILE)
    proc = SwtpmProcess(state)
    rm = AbrmdProcess(proc.tcti, base / "abrmd")
    try:
        proc.start()
        rm.start()
    except RuntimeError as exc:
        rm.stop()
        proc.stop()
        raise DemoTpmError(f"could not start swtpm and tpm2-abrmd: {exc}") from exc
    return SwtpmForDemo(ca.dir / "ca-cert.pem", ek_pubhash, proc, rm)
