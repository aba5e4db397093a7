"""gcp_iit end to end: a real ``plastron-server run`` (Google's JWKS, OAuth and Compute Engine
faked on loopback, signing with test keys) and a real ``plastron-agent run`` reading a fake
metadata server. The agent attests, the Compute Engine tags/labels/metadata become selectors, a
workload gets its SVID through a node alias on ``gcp_iit:tag:web``; a second agent on the same
instance is refused (trust on first use) and the node record is unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.gcp import JWKS_PATH, TOKEN_PATH, FakeGoogle
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

AGENT_ID = f"spiffe://{TD}/spire/agent/gcp_iit/proj-a/1001"
ALIAS = f"spiffe://{TD}/node/gcp-web"
WORKLOAD = f"spiffe://{TD}/workload/gcp"


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        fake.instance["instance_id"] = "1001"
        fake.serve_instance("proj-a", "us-west1-b", "vm-1001")
        yield fake


def _server_block(google: FakeGoogle, account: Path) -> str:
    return f"""NodeAttestor "gcp_iit" {{ plugin_data {{
        projectid_allow_list = ["proj-a"]
        jwks_url = "{google.url(JWKS_PATH)}"
        use_instance_metadata = true
        service_account_file = "{account}"
        compute_endpoint = "{google.url("/compute/v1/")}"
        allowed_label_keys = ["team"]
        allowed_metadata_keys = ["role", "empty"]
    }} }}"""


def test_agent_attests_gets_selectors_and_a_second_attestation_is_refused(
    google: FakeGoogle, tmp_path: Path
) -> None:
    account = google.write_service_account(tmp_path / "sa.json")
    agent_block = (
        f'NodeAttestor "gcp_iit" {{ plugin_data {{ identity_token_host = "{google.host}" }} }}'
    )
    with process_env(_server_block(google, account)) as env:
        register_workload(env, "gcp_iit:tag:web", ALIAS, WORKLOAD)
        first = agent_config(env.base / "agent-1", env, agent_block)
        with agent_process(first) as proc:
            wait_for_svid(first, proc, WORKLOAD)
            assert node_selectors(env, AGENT_ID) == {
                "gcp_iit:project-id:proj-a",
                "gcp_iit:zone:us-west1-b",
                "gcp_iit:instance-name:vm-1001",
                "gcp_iit:sa:node-sa@proj-a.iam.gserviceaccount.com",
                "gcp_iit:tag:web",
                "gcp_iit:tag:prod",
                "gcp_iit:label:team:blue",  # "secret" is not an allowed label key
                "gcp_iit:metadata:role:frontend",
                "gcp_iit:metadata:empty:",
            }
            identity = google.http.requests("GET", google.http.seen[0].path)[0]
            assert identity.headers["metadata-flavor"] == "Google"
            assert identity.query == {"audience": ["spire-gcp-node-attestor"], "format": ["full"]}
            before = env.node_rows()
            # another process on the same VM gets a fresh token for the same instance
            second = agent_config(env.base / "agent-2", env, agent_block)
            with agent_process(second) as intruder:
                assert wait_for_exit(intruder) != 0
            log = agent_log(second)
            assert "attestation data has already been used to attest an agent" in log, log
            assert "Traceback" not in log
            assert env.node_rows() == before
        assert google.http.count("GET", JWKS_PATH) == 1  # cached for max-age
        assert google.http.count("POST", TOKEN_PATH) == 1  # access token reused
        assert env.log_path is not None
        server_log = env.log_path.read_text(errors="replace")
        assert "Traceback" not in server_log


def test_agent_with_unreachable_metadata_server_exits_with_one_line(tmp_path: Path) -> None:
    with FakeGoogle() as google:
        host = google.host  # closed when the block ends: nothing listens there any more
    agent_block = f'NodeAttestor "gcp_iit" {{ plugin_data {{ identity_token_host = "{host}" }} }}'
    # every endpoint on loopback: nothing here may reach for the real Google
    block = f"""NodeAttestor "gcp_iit" {{ plugin_data {{
        projectid_allow_list = ["proj-a"]
        jwks_url = "http://{host}{JWKS_PATH}"
    }} }}"""
    with process_env(block) as env:
        config = agent_config(env.base / "agent", env, agent_block)
        with agent_process(config) as proc:
            assert wait_for_exit(proc) != 0
        log = agent_log(config)
        assert (
            f"gcp_iit: identity token from the metadata server: cannot reach http://{host}/" in log
        )
        assert "Traceback" not in log
