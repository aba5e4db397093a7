"""The dev kit's swtpm (``plastron.devkit.swtpm``) as ``make demo`` and ``plastron-dev up`` use
it: its swtpm behind tpm2-abrmd, its config blocks and its node selector take a real agent from
TPM attestation to a workload SVID; ``stop_all`` ends its processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tpm_e2e import TD, TpmAgent, agent_ids, cli_ok, poll, start_tpm_server

from plastron.devkit.processes import ProcessBook
from plastron.devkit.swtpm import DevTpm, start_dev_tpm

pytestmark = pytest.mark.swtpm


@pytest.fixture
def demo_tpm(base: Path) -> Iterator[DevTpm]:
    book = ProcessBook(base)
    try:
        yield start_dev_tpm(book, base / "devtpm")
    finally:
        assert book.stop_all() == ["tpm2-abrmd", "dbus-daemon", "swtpm"]


def test_demo_swtpm_attests_an_agent(base: Path, demo_tpm: DevTpm) -> None:
    server = start_tpm_server(
        base, demo_tpm.endorsement_ca_path, attestor_block=demo_tpm.server_attestor_block()
    )
    agent = TpmAgent(
        base,
        server,
        demo_tpm.tcti,
        attestor_block=demo_tpm.agent_attestor_block(),
        key_manager="tpm",  # the demo keeps the agent SVID key in the TPM
        env_extra=demo_tpm.env,
    )
    try:
        alias = f"spiffe://{TD}/demo/tpm-node"
        workload = f"spiffe://{TD}/demo/workload"
        cli_ok(server, "entry", "create", "-node", "-spiffeID", alias,
               "-selector", demo_tpm.node_selector)  # fmt: skip
        cli_ok(server, "entry", "create", "-parentID", alias, "-spiffeID", workload,
               "-selector", f"unix:uid:{os.geteuid()}")  # fmt: skip
        agent.start()
        agent.wait_healthy()
        assert agent_ids(server) == [demo_tpm.agent_id(TD)]
        poll("demo workload SVID", lambda: workload in agent.fetched_ids())
    finally:
        agent.stop()
        server.stop()
