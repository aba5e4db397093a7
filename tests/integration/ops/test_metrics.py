"""``telemetry { Prometheus {} }`` on a real server and agent: each serves ``/metrics`` with the
metrics docs/operations.md lists, and they move as the processes work."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.agent_processes import BIN, TD, AgentProcess, ServerProcess
from tests.processes import free_port, poll

ROOT = Path(__file__).resolve().parents[3]
NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-met-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            labels = re.findall(r'(\w+)="([^"]*)"', match.group(2) or "")
            out[_key(match.group(1), dict(labels))] = float(match.group(3))
    return out


def _key(name: str, labels: dict[str, str]) -> str:
    """The sample's name with its labels in name order (the exposition's order may differ)."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if labels else name


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    key = _key(name, labels)
    assert key in samples, (key, sorted(k for k in samples if k.startswith(name)))
    return samples[key]


def _documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    return set(re.findall(r"^\| `(plastron_\w+)`", text, re.MULTILINE))


def test_server_and_agent_serve_their_metrics(base: Path) -> None:
    server_port, agent_port = free_port(), free_port()
    server = ServerProcess(base)
    prometheus = f'Prometheus {{\n    host = "127.0.0.1"\n    port = {server_port}\n  }}'
    server.config.write_text(server.config.read_text() + f"telemetry {{\n  {prometheus}\n}}\n")
    server.start()
    agent = AgentProcess(
        base,
        server,
        extra_top=f'telemetry {{ Prometheus {{ host = "127.0.0.1" port = {agent_port} }} }}',
    )
    try:
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        agent.start(server.join_token(NODE))
        poll("workload SVID", lambda: WORKLOAD in agent.cli("api", "fetch", "x509").stdout)
        agent_text = poll(
            "an agent sync counted",
            lambda: (
                (t := _scrape(agent_port))
                and 'plastron_agent_syncs_total{outcome="success"}' in t
                and t
            ),
        )
        server_text = _scrape(server_port)
    finally:
        agent.stop()
        server.stop()

    s = _samples(server_text)
    assert (
        _value(s, "plastron_server_node_attestations_total", method="join_token", outcome="success")
        == 1
    )
    assert _value(s, "plastron_server_svids_signed_total", type="x509_agent") == 1
    assert _value(s, "plastron_server_svids_signed_total", type="x509_workload") >= 1
    assert (
        _value(
            s,
            "plastron_server_keymanager_sign_duration_seconds_count",
            plugin="disk",
            type="x509_agent",
        )
        == 1
    )
    assert _value(s, "plastron_server_rpc_calls_total", method="AttestAgent", code="OK") == 1
    assert _value(s, "plastron_server_rpc_calls_total", method="BatchCreateEntry", code="OK") == 1
    assert (
        _value(
            s, "plastron_server_rpc_duration_seconds_count", method="BatchNewX509SVID", code="OK"
        )
        >= 1
    )
    assert _value(s, "plastron_server_ca_events_total", kind="x509", event="activated") == 1
    remaining = _value(s, "plastron_server_ca_active_authority_remaining_seconds", kind="x509")
    assert 0 < remaining <= 24 * 3600
    assert _value(s, "plastron_server_entry_cache_entries") >= 2  # the workload and the alias
    assert (
        _value(s, "plastron_server_entry_cache_update_duration_seconds_count", kind="rebuild") >= 1
    )
    assert (
        _value(
            s,
            "plastron_server_datastore_query_duration_seconds_count",
            op="create_join_token",
            kind="write",
            outcome="success",
        )
        == 1
    )
    assert _value(s, "plastron_server_subsystem_up", subsystem="datastore") == 1
    assert _value(s, "plastron_server_subsystem_up", subsystem="ca") == 1

    a = _samples(agent_text)
    assert (
        _value(a, "plastron_agent_node_attestations_total", method="join_token", outcome="success")
        == 1
    )
    assert _value(a, "plastron_agent_syncs_total", outcome="success") >= 1
    assert _value(a, "plastron_agent_sync_duration_seconds_count", outcome="success") >= 1
    assert (
        _value(a, "plastron_agent_rpc_calls_total", method="FetchX509SVID", code="CANCELLED") >= 1
    )
    assert _value(a, "plastron_agent_rpc_first_response_seconds_count", method="FetchX509SVID") >= 1
    assert _value(a, "plastron_agent_rpc_open_streams", method="FetchX509SVID") == 0
    assert _value(a, "plastron_agent_cached_x509_svids") >= 1
    assert 0 < _value(a, "plastron_agent_svid_remaining_seconds") <= 3600
    assert _value(a, "plastron_agent_subsystem_up", subsystem="workload_api") == 1
    assert _value(a, "plastron_agent_subsystem_up", subsystem="agent_svid") == 1
    # A join_token agent with a disk KeyManager uses no TPM: no tpm series, not a fake 1.
    assert not [k for k in a if k.startswith("plastron_agent_subsystem_up") and "tpm" in k]

    served = {m for m in (*s, *a) if m.startswith("plastron_")}
    documented = _documented_metrics()
    for name in served:  # every served metric is documented (by its family name)
        family = re.sub(r"(_total|_count|_sum|_bucket|_created)?(\{.*)?$", "", name)
        assert family in documented or family + "_total" in documented, name


@pytest.mark.parametrize("sink", ["Statsd", "DogStatsd", "M3", "InMem", "MetricPrefix"])
def test_telemetry_sinks_plastron_lacks_are_refused_by_name(base: Path, sink: str) -> None:
    server = ServerProcess(base)
    server.config.write_text(server.config.read_text() + f"telemetry {{ {sink} {{}} }}\n")
    for command in ("validate", "run"):
        out = subprocess.run(
            [str(BIN / "plastron-server"), command, "-config", str(server.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 1
        assert out.stderr == f"Error: not supported by Plastron: telemetry.{sink}\n", out.stderr
