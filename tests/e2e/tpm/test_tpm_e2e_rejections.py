"""``tpm`` attestation rejected through the real server: untrusted EK CA, PCR policy violation,
an agent that stops answering, a TPM that dies mid-attestation. Each leaves a clear message
and no node record; re-attestation after eviction works (the method is re-attestable)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from grpclib.const import Status
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, make_manufacturer_ca
from tpm_e2e import (
    TD,
    TpmAgent,
    agent_count,
    agent_ids,
    agent_show,
    cli_ok,
    drive_attestation,
    ek_cert_files,
    ek_hash,
    extend_pcr,
    poll,
)

from plastron.errors import Unavailable
from plastron.tpm.attestor import TpmAgentAttestor
from tests.e2e.conftest import PlastronServerProcess

pytestmark = pytest.mark.swtpm
ServerFactory = Callable[..., PlastronServerProcess]


def _failed_agent(agent: TpmAgent) -> str:
    """Run the agent to its exit; return its log (it must fail, with exit code 1)."""
    agent.start()
    assert agent.wait_exit() == 1, agent.log()
    return agent.log()


def test_ek_cert_from_untrusted_ca_is_refused(
    base: Path, tpm: SwtpmProcess, server_factory: ServerFactory, agents: list[TpmAgent]
) -> None:
    other = make_manufacturer_ca(base / "other-ca", cn="Some Other TPM Vendor")
    server = server_factory(other.dir / "ca-cert.pem")
    agent = TpmAgent(base, server, tpm.tcti)
    agents.append(agent)
    log = _failed_agent(agent)
    assert "node attestation failed" in log
    assert "PERMISSION_DENIED: tpm: EK certificate (manufacturer CA) does not chain" in log
    assert "issuer='CN=Plastron Test TPM Manufacturer'" in log
    assert agent_count(server) == 0


def test_pcr_policy_violation_is_refused(
    base: Path,
    tpm: SwtpmProcess,
    server_factory: ServerFactory,
    manufacturer_ca: ManufacturerCa,
    agents: list[TpmAgent],
) -> None:
    # The policy pins PCR 7 to its value after a clean start (no measurements: all zero).
    policy = base / "pcr-policy.json"
    policy.write_text(json.dumps({"7": ["00" * 32]}))
    server = server_factory(manufacturer_ca.dir / "ca-cert.pem", pcr_policy=policy)
    extend_pcr(tpm.tcti, 7)
    agent = TpmAgent(base, server, tpm.tcti)
    agents.append(agent)
    failure = _failed_agent(agent)
    assert "node attestation failed" in failure
    assert "is not allowed by the PCR policy" in failure  # the agent reports the real reason
    assert agent_count(server) == 0
    # The reason, as the server states it on the wire.
    attestor = TpmAgentAttestor(tpm.tcti)
    out = asyncio.run(drive_attestation(server, attestor, on_challenge=attestor.answer))
    assert out.status == Status.PERMISSION_DENIED, out
    assert out.message.startswith("tpm: PCR 7 value ")
    assert out.message.endswith(" is not allowed by the PCR policy")
    assert "00" * 32 not in out.message
    assert agent_count(server) == 0


def test_same_pcr_policy_admits_an_unmodified_tpm(
    base: Path,
    tpm: SwtpmProcess,
    server_factory: ServerFactory,
    manufacturer_ca: ManufacturerCa,
    agents: list[TpmAgent],
) -> None:
    policy = base / "pcr-policy.json"
    policy.write_text(json.dumps({"7": ["00" * 32]}))
    server = server_factory(manufacturer_ca.dir / "ca-cert.pem", pcr_policy=policy)
    agent = TpmAgent(base, server, tpm.tcti)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()
    assert agent_count(server) == 1


def test_agent_that_stops_answering_is_dropped(
    tpm: SwtpmProcess, server_factory: ServerFactory, manufacturer_ca: ManufacturerCa
) -> None:
    server = server_factory(
        manufacturer_ca.dir / "ca-cert.pem",
        server_extra='experimental { challenge_timeout = "2s" }',
    )

    async def never(challenge: bytes) -> bytes | None:
        return None  # read the challenge, then go silent

    out = asyncio.run(drive_attestation(server, TpmAgentAttestor(tpm.tcti), on_challenge=never))
    assert out.result is None
    assert out.status == Status.DEADLINE_EXCEEDED, out
    assert "challenge response not received within 2s" in out.message
    assert agent_count(server) == 0


def test_tpm_killed_mid_attestation_then_retry_after_restart(
    base: Path, tpm: SwtpmProcess, tpm_server: PlastronServerProcess, agents: list[TpmAgent]
) -> None:
    attestor = TpmAgentAttestor(tpm.tcti)

    async def kill_then_answer(challenge: bytes) -> bytes | None:
        tpm.kill()  # the TPM dies between the payload and the answer
        return await attestor.answer(challenge)

    out = asyncio.run(drive_attestation(tpm_server, attestor, on_challenge=kill_then_answer))
    assert isinstance(out.agent_error, Unavailable), out
    assert f"TPM at {tpm.tcti} is not reachable during ActivateCredential" in str(out.agent_error)
    assert out.result is None
    assert agent_count(tpm_server) == 0

    tpm.start()  # same state: same EK
    agent = TpmAgent(base, tpm_server, tpm.tcti)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()
    assert agent_count(tpm_server) == 1


def test_agent_with_tpm_down_fails_clearly_then_attests_after_restart(
    base: Path, tpm: SwtpmProcess, tpm_server: PlastronServerProcess, agents: list[TpmAgent]
) -> None:
    tpm.kill()
    agent = TpmAgent(base, tpm_server, tpm.tcti)
    agents.append(agent)
    log = _failed_agent(agent)
    assert f"TPM at {tpm.tcti} is not reachable" in log
    assert agent_count(tpm_server) == 0
    tpm.start()
    agent.start()
    agent.wait_healthy()
    assert agent_count(tpm_server) == 1


def test_reattestation_after_evict(
    base: Path,
    tpm: SwtpmProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
    agents: list[TpmAgent],
) -> None:
    agent_id = f"spiffe://{TD}/spire/agent/tpm/{ek_hash(ek_cert_files(swtpm_template)['rsa-2048'])}"
    agent = TpmAgent(base, tpm_server, tpm.tcti, ek_type="rsa-2048")
    agents.append(agent)
    agent.start()
    agent.wait_healthy()
    first = agent_show(tpm_server, agent_id)["x509svid_serial_number"]

    cli_ok(tpm_server, "agent", "evict", "-spiffeID", agent_id)

    def reattested() -> bool:
        ids = agent_ids(tpm_server)
        return ids == [agent_id] and agent_show(tpm_server, agent_id)[
            "x509svid_serial_number"
        ] not in ("", first)

    poll("agent re-attests after eviction", reattested)
    assert agent.running(), agent.log()
    assert agent.log().count("node attestation succeeded") == 2
