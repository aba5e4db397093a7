"""``tpm`` attestation end to end: real ``plastron-server`` and ``plastron-agent`` processes, a
real swtpm per test, everything checked through the CLIs a user would run."""

from __future__ import annotations

from pathlib import Path

import pytest
from swtpm_fixtures import SwtpmProcess
from tpm_e2e import (
    TD,
    TpmAgent,
    agent_ids,
    agent_knows_tpm,
    alias_and_workload,
    cli_ok,
    ek_cert_files,
    ek_hash,
    poll,
)

from tests.e2e.conftest import PlastronServerProcess

pytestmark = pytest.mark.swtpm

WORKLOAD = f"spiffe://{TD}/workload/tpm"


@pytest.mark.parametrize("ek_type", ["rsa-2048", "ecc-p384"])
def test_agent_attests_with_ek_and_workload_gets_svid_through_node_alias(
    ek_type: str,
    base: Path,
    tpm: SwtpmProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
    agents: list[TpmAgent],
) -> None:
    pubhash = ek_hash(ek_cert_files(swtpm_template)[ek_type])
    expected_id = f"spiffe://{TD}/spire/agent/tpm/{pubhash}"
    alias_and_workload(tpm_server, pubhash, WORKLOAD)

    agent = TpmAgent(base, tpm_server, tpm.tcti, ek_type=ek_type)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()

    assert agent_ids(tpm_server) == [expected_id]
    shown = cli_ok(tpm_server, "agent", "show", "-spiffeID", expected_id)
    assert "Attestation type  : tpm" in shown
    assert "Can re-attest     : true" in shown
    assert f"Selectors         : tpm:ek_pubhash:{pubhash}" in shown
    assert "Selectors         : tpm:pcr:sha256:0:" in shown
    assert "Selectors         : tpm:pcr:sha256:7:" in shown
    assert "Selectors         : tpm:ek_ca:" in shown
    poll("workload SVID through the node alias", lambda: WORKLOAD in agent.fetched_ids())


def test_agent_registers_tpm_plugins() -> None:
    """The real ``plastron-agent`` builds NodeAttestor "tpm" (it fails on the absent TPM)."""
    known, message = agent_knows_tpm()
    assert known, message
    assert "tpm: TPM at swtpm:path=" in message and "is not reachable" in message
