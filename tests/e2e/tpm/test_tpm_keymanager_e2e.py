"""KeyManager ``tpm`` for the agent SVID, end to end through the real server.

The agent SVID key is created in the TPM, the CSR is signed there, the server certifies that
key, and the agent's mTLS handshakes are signed there too (tpm2-openssl inside Python's ssl,
tpm2-abrmd in front of swtpm as the resource manager a host has in /dev/tpmrm0)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, manufacture
from tpm_e2e import (
    TD,
    TpmAgent,
    agent_ids,
    alias_and_workload,
    drive_attestation,
    ek_cert_files,
    ek_hash,
    poll,
)
from tpm_resource_manager import AbrmdProcess

from plastron.agent.storage import AgentStorage
from plastron.keymanager import KeyType
from plastron.spiffe.x509svid import validate_x509_svid
from plastron.tpm.attestor import TpmAgentAttestor
from plastron.tpm.keymanager import FILE_NAME, TpmKeyManager
from tests.e2e.conftest import PlastronServerProcess

pytestmark = pytest.mark.swtpm
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
WORKLOAD = f"spiffe://{TD}/workload/tpm-key"


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


@pytest.fixture
def tpm_rm(tpm: SwtpmProcess, base: Path) -> Iterator[AbrmdProcess]:
    """tpm2-abrmd in front of the test's swtpm, as /dev/tpmrm0 is on a host."""
    rm = AbrmdProcess(tpm.tcti, base / "abrmd")
    rm.start()
    try:
        yield rm
    finally:
        rm.stop()


def _no_software_private_key(data_dir: Path) -> None:
    for path in data_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for label in (b"BEGIN PRIVATE KEY", b"BEGIN EC PRIVATE KEY", b"BEGIN RSA PRIVATE"):
                assert label not in text, f"{path} holds a software private key"


def test_agent_signs_its_mtls_handshakes_in_the_tpm_and_serves_workloads(
    base: Path,
    tpm_rm: AbrmdProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
    agents: list[TpmAgent],
) -> None:
    pubhash = ek_hash(ek_cert_files(swtpm_template)["rsa-2048"])
    alias_and_workload(tpm_server, pubhash, WORKLOAD)
    agent = TpmAgent(base, tpm_server, tpm_rm.tcti, key_manager="tpm", env_extra=tpm_rm.env)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()

    assert agent_ids(tpm_server) == [f"spiffe://{TD}/spire/agent/tpm/{pubhash}"]
    # Entries reach the agent only over mTLS as the agent (SyncAuthorizedEntries and
    # BatchNewX509SVID refuse anyone else), and the agent has no software copy of its key: each
    # handshake was signed by the TPM.
    poll("workload SVID over the TPM-signed mTLS", lambda: WORKLOAD in agent.fetched_ids())
    stored = json.loads((agent.data_dir / FILE_NAME).read_text())
    assert set(stored) == {"agent-svid-A"}
    assert stored["agent-svid-A"].startswith("-----BEGIN TSS2 PRIVATE KEY-----")
    state = AgentStorage(agent.data_dir).load()
    assert state is not None and state.key_id == "agent-svid-A"
    in_tpm = TpmKeyManager(agent.data_dir, tpm_rm.tcti).get_public_key("agent-svid-A")
    assert state.svid_chain[0].public_key().public_bytes(*SPKI) == in_tpm.public_bytes(*SPKI)
    _no_software_private_key(agent.data_dir)

    # A restart resumes: the stored key proves it still signs in this TPM, and the new process
    # loads it into its TLS stack again.
    agent.stop()
    agent.start()
    agent.wait_healthy()
    poll("resumed agent serves again", lambda: WORKLOAD in agent.fetched_ids())
    assert "resuming with stored agent SVID" in agent.log()
    assert len(agent_ids(tpm_server)) == 1


def test_a_copied_data_dir_is_useless_with_another_tpm(
    base: Path,
    tpm_rm: AbrmdProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
    manufacturer_ca: ManufacturerCa,
    agents: list[TpmAgent],
) -> None:
    first = TpmAgent(base, tpm_server, tpm_rm.tcti, key_manager="tpm", env_extra=tpm_rm.env)
    agents.append(first)
    first.start()
    first.wait_healthy()
    first.stop()
    original = agent_ids(tpm_server)
    assert len(original) == 1

    # Another machine: a TPM manufactured on its own (other EK, other storage seed).
    other_base = base / "other"
    other_tpm = SwtpmProcess(manufacture(other_base / "state", manufacturer_ca))
    other_tpm.start()
    other_rm = AbrmdProcess(other_tpm.tcti, other_base / "abrmd")
    try:
        other_rm.start()
        thief = TpmAgent(
            other_base, tpm_server, other_rm.tcti, key_manager="tpm", env_extra=other_rm.env
        )
        agents.append(thief)
        shutil.copytree(first.data_dir, thief.data_dir)  # the stolen agent SVID and key blob
        thief.start()
        thief.wait_healthy()
        # The stolen key did not load in this TPM, so the copy could not resume as the first
        # node: it attested as itself, with its own EK.
        assert "cannot sign here" in thief.log()
        ids = agent_ids(tpm_server)
        assert len(ids) == 2 and original[0] in ids
        (new_id,) = set(ids) - set(original)
        assert new_id.startswith(f"spiffe://{TD}/spire/agent/tpm/")
        stolen = json.loads((first.data_dir / FILE_NAME).read_text())
        stored = json.loads((thief.data_dir / FILE_NAME).read_text())
        assert stored["agent-svid-A"] != stolen["agent-svid-A"]  # a fresh key in its own TPM
    finally:
        for agent in agents:
            agent.stop()
        other_rm.stop()
        other_tpm.kill()


def test_agent_refuses_a_tcti_without_resource_manager(
    base: Path, tpm: SwtpmProcess, tpm_server: PlastronServerProcess
) -> None:
    agent = TpmAgent(base, tpm_server, tpm.tcti, key_manager="tpm")
    agent.start()
    assert agent.wait_exit() == 1
    assert "serves one client at a time" in agent.log() and "tabrmd" in agent.log()
    assert "Traceback" not in agent.log()
    assert agent_ids(tpm_server) == []  # refused before attesting


def test_agent_rotates_its_tpm_key_and_keeps_talking_mtls(
    base: Path,
    tpm_rm: AbrmdProcess,
    server_factory: Callable[..., PlastronServerProcess],
    manufacturer_ca: ManufacturerCa,
    swtpm_template: Path,
    agents: list[TpmAgent],
) -> None:
    """RenewAgent makes the next key in the TPM (CSR signed there) and the agent's next TLS
    context loads it through the provider; syncing goes on over the new handshake key."""
    server = server_factory(manufacturer_ca.dir / "ca-cert.pem", server_extra='agent_ttl = "30s"')
    agent = TpmAgent(base, server, tpm_rm.tcti, key_manager="tpm", env_extra=tpm_rm.env)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()
    first = AgentStorage(agent.data_dir).load()
    assert first is not None and first.key_id == "agent-svid-A"

    def rotated() -> bool:
        state = AgentStorage(agent.data_dir).load()
        return state is not None and state.key_id == "agent-svid-B"

    poll("agent SVID rotated to the TPM key in slot B", rotated, deadline=40)
    pubhash = ek_hash(ek_cert_files(swtpm_template)["rsa-2048"])
    alias_and_workload(server, pubhash, WORKLOAD)  # reaches the agent only over mTLS with key B
    poll("workload SVID after rotation", lambda: WORKLOAD in agent.fetched_ids())
    assert agent.running()
    state = AgentStorage(agent.data_dir).load()
    assert state is not None
    in_tpm = TpmKeyManager(agent.data_dir, tpm_rm.tcti).get_public_key("agent-svid-B")
    assert state.svid_chain[0].public_key().public_bytes(*SPKI) == in_tpm.public_bytes(*SPKI)
