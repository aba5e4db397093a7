"""Real processes for nested-server tests: an upstream server (CA key in SoftHSM2) with one
agent, downstream servers attested as downstream workloads of that agent (UpstreamAuthority
``spire``), and an agent under each downstream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from softhsm_token import SoftHsmToken
from spiffe import WorkloadApiClient

from tests.integration.agent.agent_processes import TD, AgentProcess, ServerProcess
from tests.integration.hsm_server.test_authority_taint_e2e import hsm_server
from tests.processes import poll

UPSTREAM_NODE = f"spiffe://{TD}/upstream-node"
JOIN_TOKEN_LINE = '  NodeAttestor "join_token" { plugin_data {} }\n'


def downstream_id(name: str) -> str:
    return f"spiffe://{TD}/downstream/{name}"


@dataclass
class Upstream:
    server: ServerProcess
    agent: AgentProcess

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


def start_upstream(base: Path, token: SoftHsmToken) -> Upstream:
    """The HSM-rooted upstream server and its agent (joined with a token)."""
    (base / "up").mkdir()
    server = hsm_server(base / "up", token)
    server.start()
    agent = AgentProcess(base / "up", server, sync_interval="1s")
    agent.start(server.join_token(UPSTREAM_NODE))
    return Upstream(server, agent)


def register_downstream(upstream: Upstream, name: str, *, downstream: bool = True) -> None:
    """The entry that lets a server process of this uid ask the upstream for a CA (without
    ``downstream``: an ordinary workload entry for the same process)."""
    server = upstream.server
    server.cli(
        "entry", "create", "-parentID", UPSTREAM_NODE, "-spiffeID", downstream_id(name),
        "-selector", upstream.agent.uid_selector, *(["-downstream"] if downstream else []),
    )  # fmt: skip
    client = WorkloadApiClient(socket_path=f"unix://{upstream.agent.socket_path}")
    try:
        poll(
            f"SVID for downstream {name} on the upstream agent",
            lambda: any(
                str(s.spiffe_id) == downstream_id(name)
                for s in client.fetch_x509_context().x509_svids
            ),
        )
    finally:
        client.close()


def downstream_server(
    base: Path, upstream: Upstream, name: str, server_extra: str = ""
) -> ServerProcess:
    """A server whose CA comes from ``upstream`` (not started)."""
    (base / name).mkdir()
    server = ServerProcess(base / name, server_extra=server_extra)
    block = (
        f'  UpstreamAuthority "spire" {{ plugin_data {{ server_address = "127.0.0.1" '
        f'server_port = "{upstream.server.port}" '
        f'workload_api_socket = "{upstream.agent.socket_path}" }} }}\n'
    )
    config = server.config.read_text()
    assert JOIN_TOKEN_LINE in config, config
    server.config.write_text(config.replace(JOIN_TOKEN_LINE, JOIN_TOKEN_LINE + block))
    return server
