"""A TPM without EK certificates in NV (common for firmware TPMs): the operator allow-lists the
EK hash named in the first refusal, restarts the server, and the agent attests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, manufacture
from tpm_e2e import TD, TpmAgent, agent_count, agent_ids, start_tpm_server

from tests.e2e.conftest import PlastronServerProcess

pytestmark = pytest.mark.swtpm
REFUSAL = re.compile(r"tpm: EK ([0-9a-f]{64}) has no certificate chaining to a trusted CA")


@pytest.fixture
def bare_tpm(base: Path, manufacturer_ca: ManufacturerCa) -> Iterator[SwtpmProcess]:
    proc = SwtpmProcess(manufacture(base / "bare", manufacturer_ca, ek_certs=False))
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def allowlist_server(
    base: Path, manufacturer_ca: ManufacturerCa
) -> Iterator[tuple[PlastronServerProcess, Path]]:
    listed = base / "ek-hashes"
    listed.write_text("# allowed EKs\n")
    block = (
        f'NodeAttestor "tpm" {{ plugin_data {{ ek_hash_path = "{listed}" '
        f'endorsement_ca_path = "{manufacturer_ca.dir / "ca-cert.pem"}" pcrs = [7] }} }}'
    )
    server = start_tpm_server(base, manufacturer_ca.dir / "ca-cert.pem", attestor_block=block)
    try:
        yield server, listed
    finally:
        server.stop()


def test_allow_listed_ek_without_certificate_attests(
    base: Path, bare_tpm: SwtpmProcess, allowlist_server: tuple[PlastronServerProcess, Path]
) -> None:
    server, listed = allowlist_server
    agent = TpmAgent(base, server, bare_tpm.tcti)
    try:
        agent.start()
        assert agent.wait_exit() == 1
        found = REFUSAL.search(agent.log())
        assert found, agent.log()
        assert agent_count(server) == 0

        listed.write_text(f"# allowed EKs\n{found.group(1)}\n")
        server.stop()
        server.start()  # the allow-list is read at start
        agent.start()
        agent.wait_healthy()
        assert agent_ids(server) == [f"spiffe://{TD}/spire/agent/tpm/{found.group(1)}"]
    finally:
        agent.stop()


def test_high_range_ek_without_certificate_is_refused_by_the_agent(
    base: Path, bare_tpm: SwtpmProcess, allowlist_server: tuple[PlastronServerProcess, Path]
) -> None:
    server, _ = allowlist_server
    agent = TpmAgent(base, server, bare_tpm.tcti, ek_type="ecc-p384")
    agent.start()
    assert agent.wait_exit() == 1
    assert "tpm: the TPM has no ecc-p384 EK certificate (high-range EKs need one" in agent.log()
    assert agent_count(server) == 0
