"""azure_msi end to end: a real ``plastron-server run`` and ``plastron-agent run`` with Azure
faked on loopback (IMDS signing with a test key, Entra's keys, Resource Manager). The server
has no app credentials: it reads Resource Manager as its own managed identity, as SPIRE's
default credential does. The agent attests, the VM's network becomes selectors, a workload gets
its SVID through a node alias on the subnet; a second agent on the same VM is refused."""

from __future__ import annotations

from pathlib import Path

from tests.cloud.azure import JWKS_PATH, SUBSCRIPTION, TENANT, FakeAzure
from tests.conformance.nodeattestor_env import process_env
from tests.integration.cloud.agent_process import (
    TD,
    agent_config,
    agent_log,
    agent_process,
    node_selectors,
    register_workload,
    wait_for_exit,
    wait_for_svid,
)

ALIAS = f"spiffe://{TD}/node/azure-frontend"
WORKLOAD = f"spiffe://{TD}/workload/azure"
RESOURCE = "api://plastron-attestation"


def test_agent_attests_with_the_servers_managed_identity_and_once_only(tmp_path: Path) -> None:
    with FakeAzure() as azure:
        azure.add_vm(azure.principal, "frontend", "blog")
        server_block = f"""NodeAttestor "azure_msi" {{ plugin_data {{
            tenants = {{ "{TENANT.upper()}" = {{ resource_id = "{RESOURCE}" }} }}
            jwks_url = "{azure.http.url(JWKS_PATH)}"
            resource_manager_endpoint = "{azure.arm()}"
            metadata_endpoint = "{azure.endpoint}"
        }} }}"""
        agent_block = f"""NodeAttestor "azure_msi" {{ plugin_data {{
            resource_id = "{RESOURCE}"
            metadata_endpoint = "{azure.endpoint}"
        }} }}"""
        with process_env(server_block) as env:
            register_workload(
                env, "azure_msi:virtual-network-subnet:net:vnet:default", ALIAS, WORKLOAD
            )
            first = agent_config(env.base / "agent-1", env, agent_block)
            agent_id = f"spiffe://{TD}/spire/agent/azure_msi/{TENANT}/{azure.principal}"
            with agent_process(first) as proc:
                wait_for_svid(first, proc, WORKLOAD)
                assert node_selectors(env, agent_id) == {
                    f"azure_msi:subscription-id:{SUBSCRIPTION}",
                    "azure_msi:resource-group:frontend",
                    "azure_msi:vm-name:frontend:blog",
                    "azure_msi:network-security-group:frontend:webservers",
                    "azure_msi:virtual-network:net:vnet",
                    "azure_msi:virtual-network-subnet:net:vnet:default",
                }
                before = env.node_rows()
                second = agent_config(env.base / "agent-2", env, agent_block)
                with agent_process(second) as intruder:
                    assert wait_for_exit(intruder) != 0
                log = agent_log(second)
                assert "azure_msi: attestation data has already been used" in log, log
                assert "Traceback" not in log
                assert env.node_rows() == before
            asked = azure.http.requests("GET", "/metadata/identity/oauth2/token")
            assert {s.query["resource"][0] for s in asked} == {RESOURCE, azure.arm()}
            assert all(s.headers["metadata"] == "true" for s in asked)
            assert env.log_path is not None
            assert "Traceback" not in env.log_path.read_text(errors="replace")


def test_agent_with_unreachable_imds_exits_with_one_line() -> None:
    with FakeAzure() as azure:
        endpoint = azure.endpoint  # closed when the block ends
    block = f'NodeAttestor "azure_msi" {{ plugin_data {{ metadata_endpoint = "{endpoint}" }} }}'
    # every endpoint on loopback: nothing here may reach for the real Azure
    server = f"""NodeAttestor "azure_msi" {{ plugin_data {{
        tenants = {{ "{TENANT}" = {{}} }}
        jwks_url = "{endpoint}{JWKS_PATH}"
        resource_manager_endpoint = "{endpoint}/"
        authority_endpoint = "{endpoint}/"
        metadata_endpoint = "{endpoint}"
    }} }}"""
    with process_env(server) as env:
        config = agent_config(env.base / "agent", env, block)
        with agent_process(config) as proc:
            assert wait_for_exit(proc) != 0
        log = agent_log(config)
        assert (
            "azure_msi: managed identity token from the instance metadata service: cannot reach "
            f"{endpoint}/metadata/identity/oauth2/token" in log
        ), log
        assert "Traceback" not in log
