"""KeyManager ``tpm`` for the agent SVID, end to end through the real server.

The agent SVID key is created in the TPM, the CSR is signed there, and the server certifies
that key. The agent's mTLS to the server is the open problem: Python's ``ssl`` loads a client
key only as PEM bytes, and a TPM key has none (docs/plugins/tpm.md, "Agent KeyManager")."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from swtpm_fixtures import SwtpmProcess
from tpm_e2e import TD, TpmAgent, agent_ids, drive_attestation, ek_cert_files, ek_hash

from plastron.keymanager import KeyType
from plastron.spiffe.x509svid import validate_x509_svid
from plastron.tpm.attestor import TpmAgentAttestor
from plastron.tpm.keymanager import FILE_NAME, TpmKeyManager
from tests.e2e.conftest import PlastronServerProcess

pytestmark = pytest.mark.swtpm
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def agents() -> Iterator[list[TpmAgent]]:
    started: list[TpmAgent] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.stop()


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
def test_server_certifies_a_tpm_resident_agent_key(
    key_type: KeyType,
    base: Path,
    tpm: SwtpmProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
) -> None:
    keys = TpmKeyManager(base / "agent-keys", tpm.tcti)
    public = keys.generate_key("agent-svid-A", key_type)
    attestor = TpmAgentAttestor(tpm.tcti)
    out = asyncio.run(
        drive_attestation(
            tpm_server,
            attestor,
            on_challenge=attestor.answer,
            key=keys.signer("agent-svid-A"),  # the CSR is signed inside the TPM
        )
    )
    assert out.result is not None, out
    chain = [x509.load_der_x509_certificate(c) for c in out.result.svid.cert_chain]
    assert chain[0].public_key().public_bytes(*SPKI) == public.public_bytes(*SPKI)
    pubhash = ek_hash(ek_cert_files(swtpm_template)["rsa-2048"])
    spiffe_id = validate_x509_svid(chain, tpm_server.bundle_certificates(), dt.datetime.now(dt.UTC))
    assert str(spiffe_id) == f"spiffe://{TD}/spire/agent/tpm/{pubhash}"
    # Only the TPM-wrapped blob is on disk: no software private key anywhere in the file.
    stored = (base / "agent-keys" / FILE_NAME).read_text()
    assert "TSS2 PRIVATE KEY" in stored and "BEGIN PRIVATE KEY" not in stored


@pytest.mark.xfail(
    strict=True,
    reason="the agent's mTLS client (plastron/transport/tls.py _pem_key) needs the SVID key as "
    "PEM; a TPM key is not exportable, so the agent exits right after attesting",
)
def test_agent_process_with_tpm_keymanager_serves_workloads(
    base: Path, tpm: SwtpmProcess, tpm_server: PlastronServerProcess, agents: list[TpmAgent]
) -> None:
    agent = TpmAgent(base, tpm_server, tpm.tcti, key_manager="tpm")
    agents.append(agent)
    agent.start()
    try:
        agent.wait_healthy()
    finally:
        # What happens today, for the record: the server has admitted the node (the CSR was
        # signed in the TPM), then the agent fails building its mTLS channel.
        assert len(agent_ids(tpm_server)) == 1
        assert "agent-svid-A" in (agent.data_dir / FILE_NAME).read_text()
