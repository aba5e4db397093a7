"""docs/plugins/tpm_devid.md, "Provisioning a DevID key": the documented commands, run as written
(on a swtpm instead of /dev/tpmrm0, paths moved under a temporary directory), give a DevID key
and certificate that the tpm_devid attestor accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import KeyManagerError
from plastron.plugins import PluginContext
from plastron.spiffe.ids import TrustDomain
from plastron.tpm.devid import TpmDevidAgentAttestor, TpmDevidServerAttestor, TpmDevidServerConfig
from plastron.tpm.devid_provisioning import create_devid_with_csr
from plastron.tpm.structures import parse_tpm2b_public
from tests.docs.doc_blocks import block_tested_by

pytestmark = pytest.mark.swtpm
REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 120


def documented_block() -> str:
    return block_tested_by(__file__, "test_documented_devid_steps_attest").text


def run_bash(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


async def test_documented_devid_steps_attest(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    etc = tmp_path / "etc"
    devid_ca = make_manufacturer_ca(tmp_path / "devid-ca", "Node DevID CA")
    etc.mkdir(mode=0o700)
    (etc / "devid-ca.pem").write_bytes(devid_ca.cert_pem)
    (etc / "devid-ca.key").write_bytes(
        devid_ca.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    script = (
        documented_block()
        .replace("/etc/plastron", str(etc))
        .replace("device:/dev/tpmrm0", swtpm.tcti)
    )

    done = run_bash(script)
    assert done.returncode == 0, done.stderr
    assert "generated ecc-p256 DevID key in the TPM" in done.stdout, done.stdout
    assert (etc / "devid.priv").stat().st_mode & 0o777 == 0o600
    csr = x509.load_pem_x509_csr((etc / "devid.csr").read_bytes())
    assert csr.is_signature_valid  # signed by the new key, inside the TPM

    agent = TpmDevidAgentAttestor(
        str(etc / "devid.crt.pem"), str(etc / "devid.priv"), str(etc / "devid.pub"), tcti=swtpm.tcti
    )
    data = {
        "devid_ca_path": str(etc / "devid-ca.pem"),
        "endorsement_ca_path": str(manufacturer_ca.dir / "ca-cert.pem"),
    }
    settings = PluginConfig("NodeAttestor", "tpm_devid", data).settings()
    server = TpmDevidServerAttestor(
        TpmDevidServerConfig.from_settings(settings, PluginContext()), TrustDomain("example.org")
    )
    result = await server.attest(await agent.payload(), agent.answer)
    assert str(result.agent_id).startswith("spiffe://example.org/spire/agent/tpm_devid/")
    assert "tpm_devid:subject:cn:node-1" in {str(s) for s in result.selectors}

    again = run_bash(script.split("\nprintf")[0])  # keygen again, blobs already there
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "exists; pass -replace" in again.stderr


@pytest.mark.parametrize("key_type", ["ecc-p256", "rsa-2048"])
def test_devid_csr_is_signed_by_the_tpm_key(swtpm: SwtpmProcess, key_type: str) -> None:
    subject = x509.Name.from_rfc4514_string("CN=node-2")
    blob, csr, public = create_devid_with_csr(swtpm.tcti, key_type, subject)
    assert csr.is_signature_valid and csr.public_key() == public
    assert parse_tpm2b_public(blob.public).public_key() == public


def test_unknown_devid_key_type_is_one_clear_error(swtpm: SwtpmProcess) -> None:
    with pytest.raises(KeyManagerError, match="unknown DevID key type 'ecc-p521'"):
        create_devid_with_csr(swtpm.tcti, "ecc-p521", x509.Name.from_rfc4514_string("CN=n"))
