"""The agent's TPM availability, as an operator sees it: ``plastron_agent_subsystem_up{subsystem=
"tpm"}`` on ``/metrics`` and the ``tpm`` subsystem of ``/ready``, while the real swtpm the agent
attested with is killed, restarted on the same state, and frozen; directly and behind
tpm2-abrmd with KeyManager ``tpm``.

The agent runs with a short probe interval and timeout, set in its process before it starts
(module-level knobs, not configuration)."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from swtpm_fixtures import SwtpmProcess
from tpm_e2e import TD, TpmAgent, alias_and_workload, ek_cert_files, ek_hash
from tpm_resource_manager import AbrmdProcess

from tests.e2e.conftest import PlastronServerProcess
from tests.processes import free_port, poll

pytestmark = pytest.mark.swtpm
WORKLOAD = f"spiffe://{TD}/workload/tpm-probe"
UP = 'plastron_agent_subsystem_up{subsystem="tpm"}'
PROBE_INTERVAL, PROBE_TIMEOUT = 0.2, 1.0
# Probe intervals the metric may take to follow the TPM: a few, not a wall-clock promise.
DEADLINE = 30.0


def _launcher() -> list[str]:
    code = (
        "import sys; import plastron.agent.tpm_probe as p; "
        f"p.PROBE_INTERVAL = {PROBE_INTERVAL}; p.PROBE_TIMEOUT = {PROBE_TIMEOUT}; "
        "from plastron.agent.cli.main import main; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


class Observed:
    """The agent's /metrics and /ready listeners."""

    def __init__(self, agent: TpmAgent) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        agent.config.write_text(
            agent.config.read_text()
            + f'telemetry {{ Prometheus {{ host = "127.0.0.1" port = {self.metrics_port} }} }}\n'
            + 'health_checks {\n  listener_enabled = true\n  bind_address = "127.0.0.1"\n'
            + f"  bind_port = {self.health_port}\n}}\n"
        )

    def tpm_lines(self) -> list[str]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return [line for line in text.splitlines() if line.startswith(UP)]

    def tpm_up(self) -> float | None:
        lines = self.tpm_lines()
        return float(lines[0].split()[-1]) if lines else None

    def ready(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.health_port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def _start(
    base: Path, server: PlastronServerProcess, tpm: SwtpmProcess
) -> tuple[TpmAgent, Observed]:
    agent = TpmAgent(base, server, tpm.tcti, launcher=_launcher())
    observed = Observed(agent)
    agent.start()
    agent.wait_healthy()
    return agent, observed


def test_tpm_outage_shows_on_metrics_and_ready_and_recovers(
    base: Path,
    tpm: SwtpmProcess,
    tpm_server: PlastronServerProcess,
    swtpm_template: Path,
    agents: list[TpmAgent],
) -> None:
    alias_and_workload(tpm_server, ek_hash(ek_cert_files(swtpm_template)["rsa-2048"]), WORKLOAD)
    agent, observed = _start(base, tpm_server, tpm)
    agents.append(agent)
    assert observed.tpm_up() == 1.0
    code, body = observed.ready()
    assert code == 200 and body["subsystems"]["tpm"]["healthy"] is True

    tpm.kill()
    poll("tpm down on /metrics", lambda: observed.tpm_up() == 0.0, deadline=DEADLINE)
    code, body = observed.ready()
    down = body["subsystems"]["tpm"]
    assert code == 500 and body["ready"] is False and down["healthy"] is False
    assert "does not answer" in down["last_error"] and str(tpm.sock) in down["last_error"]
    assert down["last_healthy_seconds_ago"] is not None  # it was healthy before the outage
    assert body["subsystems"]["agent_svid"]["healthy"] is True  # only the TPM is down
    poll("workloads still served", lambda: WORKLOAD in agent.fetched_ids())

    tpm.start()  # the same state directory: the same TPM back
    poll("tpm up again on /metrics", lambda: observed.tpm_up() == 1.0, deadline=DEADLINE)
    code, body = observed.ready()
    up = body["subsystems"]["tpm"]
    assert code == 200 and up["healthy"] is True
    assert "does not answer" in up["last_error"]  # the outage stays visible after recovery
    assert agent.running()
    log = agent.log()
    assert "TPM probe failed" in log and "TPM answers" in log and "Traceback" not in log


def test_a_hung_tpm_times_out_without_hanging_the_agent(
    base: Path,
    tpm: SwtpmProcess,
    tpm_server: PlastronServerProcess,
    agents: list[TpmAgent],
) -> None:
    agent, observed = _start(base, tpm_server, tpm)
    agents.append(agent)
    assert observed.tpm_up() == 1.0
    pid = tpm.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # swtpm accepts nothing and answers nothing: a hung TPM
    try:
        poll("tpm down on /metrics", lambda: observed.tpm_up() == 0.0, deadline=DEADLINE)
        code, body = observed.ready()  # the agent's event loop still answers
        assert code == 500
        assert body["subsystems"]["tpm"]["detail"].startswith(
            ("tpm: no answer within", "tpm: the last probe has not returned")
        )
        assert agent.cli("healthcheck").returncode == 0  # the Workload API still serves
        os.kill(pid, signal.SIGCONT)
        poll("tpm up again on /metrics", lambda: observed.tpm_up() == 1.0, deadline=DEADLINE)

        os.kill(pid, signal.SIGSTOP)  # hung again, and the agent is asked to stop meanwhile
        poll("tpm down again", lambda: observed.tpm_up() == 0.0, deadline=DEADLINE)
        agent.stop()  # SIGTERM (SIGKILL after 20 s)
        assert agent.process is not None and agent.process.returncode == 0, agent.log()
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def tpm_rm(tpm: SwtpmProcess, base: Path) -> Iterator[AbrmdProcess]:
    """tpm2-abrmd in front of the test's swtpm, as /dev/tpmrm0 is on a host."""
    rm = AbrmdProcess(tpm.tcti, base / "abrmd")
    rm.start()
    try:
        yield rm
    finally:
        rm.stop()


def test_a_tpm_key_manager_behind_a_resource_manager_is_probed_through_it(
    base: Path,
    tpm: SwtpmProcess,
    tpm_rm: AbrmdProcess,
    tpm_server: PlastronServerProcess,
    agents: list[TpmAgent],
) -> None:
    """NodeAttestor and KeyManager ``tpm`` on tpm2-abrmd: one TPM, one series, probed through
    the resource manager the plugins use; the TPM behind it going away shows there too."""
    agent = TpmAgent(
        base,
        tpm_server,
        tpm_rm.tcti,
        key_manager="tpm",
        env_extra=tpm_rm.env,
        launcher=_launcher(),
    )
    observed = Observed(agent)
    agents.append(agent)
    agent.start()
    agent.wait_healthy()
    assert observed.tpm_lines() == [f"{UP} 1.0"]

    tpm.kill()
    poll("tpm down on /metrics", lambda: observed.tpm_up() == 0.0, deadline=DEADLINE)
    code, body = observed.ready()
    assert code == 500 and tpm_rm.tcti in body["subsystems"]["tpm"]["last_error"]
    tpm.start()
    poll("tpm up again on /metrics", lambda: observed.tpm_up() == 1.0, deadline=DEADLINE)
