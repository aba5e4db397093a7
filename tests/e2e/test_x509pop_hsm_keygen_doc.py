"""docs/plugins/x509pop.md, "Making a node key in an HSM": the documented commands, run as
written (paths moved under a temporary directory, the token label made unique), give a node
key in a SoftHSM2 token that the x509pop attestor accepts, and a certificate for it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from plastron.devkit.swtpm import make_manufacturer_ca
from tests.docs.doc_blocks import block_tested_by

pytestmark = pytest.mark.softhsm
REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120

# Run in a fresh interpreter: SoftHSM reads SOFTHSM2_CONF once per process, and this test's
# token directory is its own. Both halves of x509pop attest with what the commands made.
ATTEST = """
import asyncio, sys
from plastron.agent.plugin_loading import agent_plugins
from plastron.attestors.x509pop.config import X509PopServerConfig
from plastron.attestors.x509pop.plugin import create_agent_attestor
from plastron.attestors.x509pop.server import X509PopServerAttestor
from plastron.clock import SystemClock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.spiffe.ids import TrustDomain

etc, uri = sys.argv[1], sys.argv[2]
plugin = PluginConfig(type="NodeAttestor", name="x509pop", plugin_data={
    "certificate_path": f"{etc}/node.crt.pem", "private_key_uri": uri})
agent = create_agent_attestor(plugin, agent_plugins().context())
config = X509PopServerConfig.from_plugin_data({"ca_bundle_path": f"{etc}/node-ca.pem"})
server = X509PopServerAttestor(config, TrustDomain("example.org"), SystemClock())

async def main():
    result = await server.attest(await agent.payload(), agent.answer)
    print(result.agent_id)

asyncio.run(main())
"""


def documented_block() -> str:
    return block_tested_by(__file__, "test_documented_hsm_node_key_steps_attest").text


def write_node_ca(etc: Path) -> None:
    """The node CA the documented openssl step signs with (an EC P-256 root)."""
    ca = make_manufacturer_ca(etc / "node-ca", "Node CA")
    (etc / "node-ca.pem").write_bytes(ca.cert_pem)
    (etc / "node-ca.key").write_bytes((ca.dir / "ca-key.pem").read_bytes())


def test_documented_hsm_node_key_steps_attest(tmp_path: Path) -> None:
    etc, tokens = tmp_path / "etc", tmp_path / "tokens"
    etc.mkdir(mode=0o700)
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    write_node_ca(etc)
    label = f"node-{uuid.uuid4().hex[:8]}"
    script = documented_block().replace("/etc/plastron", str(etc)).replace("node-token", label)
    env = {
        **os.environ,
        "SOFTHSM2_CONF": str(conf),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }

    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "generated ec-p256 key 'nodes/x509pop'" in done.stdout, done.stdout
    csr = x509.load_pem_x509_csr((etc / "node.csr").read_bytes())
    cert = x509.load_pem_x509_certificate((etc / "node.crt.pem").read_bytes())
    assert csr.is_signature_valid and cert.public_key() == csr.public_key()

    uri = re.search(r"-uri '([^']+)'", script)
    assert uri
    attested = subprocess.run(
        [sys.executable, "-c", ATTEST, str(etc), uri.group(1)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
    )
    assert attested.returncode == 0, attested.stderr
    assert attested.stdout.startswith("spiffe://example.org/spire/agent/x509pop/"), attested

    keygen = re.search(r"plastron-agent x509pop keygen .*?-csr \S+", script, re.S)
    assert keygen
    again = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", keygen.group(0)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    # the token keeps the node key: a second keygen without -replace is one line, exit 1
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "already holds a key" in again.stderr, again.stderr
