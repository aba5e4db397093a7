"""Agent settings that change what the agent does, with real server and agent processes:
``trust_bundle_format = "spiffe"`` bootstraps from a SPIFFE bundle (JWKS) document, and
``workload_x509_svid_key_type = "rsa-2048"`` gives workloads RSA-2048 X509-SVID keys."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pks-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_spiffe_bootstrap_bundle_and_rsa_workload_keys(base: Path) -> None:
    server = ServerProcess(base)
    server.start()
    try:
        agent = AgentProcess(
            base,
            server,
            agent_extra='trust_bundle_format = "spiffe"\n'
            '  workload_x509_svid_key_type = "rsa-2048"',
        )
        # the bootstrap file as a SPIFFE bundle document, not PEM
        jwks = server.cli("bundle", "show", "-format", "spiffe").stdout
        assert jwks.lstrip().startswith("{")
        (base / "bootstrap.pem").write_text(jwks)
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        agent.start(server.join_token(NODE))
        try:
            out = base / "svids"
            out.mkdir()

            def written() -> bool:
                return agent.cli("api", "fetch", "x509", "-write", str(out)).returncode == 0

            poll("workload SVID written", written)
            key = serialization.load_pem_private_key((out / "svid.0.key").read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
            (leaf, *_) = x509.load_pem_x509_certificates((out / "svid.0.pem").read_bytes())
            assert leaf.public_key() == key.public_key()
        finally:
            agent.stop()
    finally:
        server.stop()
