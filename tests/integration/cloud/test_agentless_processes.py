"""k8s_psat and aws_iam end to end: a real ``plastron-server run`` and real ``plastron-agent
run`` processes, with the Kubernetes API (TLS, test CA, kubeconfig) and STS (SigV4 verified)
faked on loopback. Each agent attests, its selectors are the method's, and a workload gets its
SVID through a node alias on one of them.

aws_iam: two tasks of one role (two sessions, credentials in the agent's environment as ECS
and Lambda give them) are two agents with distinct IDs; k8s_psat: the agent reads
its projected token file and becomes /k8s_psat/<cluster>/<node UID>."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.kubernetes import FakeKubernetes, Pod, sa_claims
from tests.cloud.sts import FakeSts, task_role
from tests.conformance.nodeattestor_env import process_env
from tests.integration.cloud.agent_process import (
    TD,
    agent_config,
    agent_log,
    agent_process,
    node_selectors,
    register_workload,
    wait_for_svid,
)

SERVER_ID = "plastron.example.org"


@pytest.fixture
def sts() -> Iterator[FakeSts]:
    with FakeSts() as fake:
        yield fake


def _aws_env(access_key: str, secret: str, token: str, base: Path) -> dict[str, str]:
    # only these credentials: no profile, config file or instance metadata service
    return {
        "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": token, "AWS_CONFIG_FILE": str(base / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(base / "none"), "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip


def test_two_tasks_of_one_role_are_two_agents(sts: FakeSts, tmp_path: Path) -> None:
    server_block = f"""NodeAttestor "aws_iam" {{ plugin_data {{
        server_id = "{SERVER_ID}"
        account_allow_list = ["123456789012"]
        sts_endpoint = "{sts.endpoint}"
    }} }}"""
    agent_block = f"""NodeAttestor "aws_iam" {{ plugin_data {{
        server_id = "{SERVER_ID}"
        sts_endpoint = "{sts.endpoint}"
    }} }}"""
    workload = f"spiffe://{TD}/workload/payments"
    with process_env(server_block) as env:
        register_workload(
            env, "aws_iam:role:payments-task", f"spiffe://{TD}/node/payments", workload
        )
        agent_ids = []
        for n in (1, 2):
            who = sts.issue(task_role(100 + n))
            config = agent_config(env.base / f"task-{n}", env, agent_block)
            creds = _aws_env(who.access_key, who.secret_key, who.token, env.base)
            with agent_process(config, creds) as proc:
                wait_for_svid(config, proc, workload)
            rows = env.node_rows()["attested_node_entries"]
            ids = {row[1] for row in rows if "/aws_iam/" in str(row[1])}
            (new,) = ids - set(agent_ids)
            agent_ids.append(new)
            assert node_selectors(env, new) == {
                "aws_iam:account:123456789012", "aws_iam:role:payments-task",
                f"aws_iam:arn:{who.arn}", f"aws_iam:user_id:{who.user_id}",
            }  # fmt: skip
            assert "Traceback" not in agent_log(config)
        prefix = f"spiffe://{TD}/spire/agent/aws_iam/123456789012/payments-task/"
        assert all(a.startswith(prefix) for a in agent_ids) and len(set(agent_ids)) == 2
        assert sts.calls() == 2


def test_k8s_psat_agent_attests_with_its_projected_token(tmp_path: Path) -> None:
    with FakeKubernetes(tmp_path) as kube:
        kube.add_node("worker-1", "0b7c6a52-uid", {"zone": "a"})
        pod = Pod("spire", "spire-agent-x1", "pod-uid-x1", "worker-1", labels={"app": "agent"})
        kube.add_pod(pod)
        token = tmp_path / "psat-token"
        token.write_text(kube.sign(sa_claims(pod)))
        server_block = f"""NodeAttestor "k8s_psat" {{ plugin_data {{ clusters = {{
            "prod-1" = {{
                service_account_allow_list = ["spire:spire-agent"]
                kube_config_file = "{kube.kubeconfig()}"
                allowed_node_label_keys = ["zone"]
            }}
        }} }} }}"""
        agent_block = f"""NodeAttestor "k8s_psat" {{ plugin_data {{
            cluster = "prod-1"
            token_path = "{token}"
        }} }}"""
        workload = f"spiffe://{TD}/workload/k8s"
        with process_env(server_block) as env:
            register_workload(
                env, "k8s_psat:agent_node_label:zone:a", f"spiffe://{TD}/node/a", workload
            )
            config = agent_config(env.base / "agent", env, agent_block)
            with agent_process(config) as proc:
                wait_for_svid(config, proc, workload)
            agent_id = f"spiffe://{TD}/spire/agent/k8s_psat/prod-1/0b7c6a52-uid"
            assert "k8s_psat:agent_pod_uid:pod-uid-x1" in node_selectors(env, agent_id)
            assert "Traceback" not in agent_log(config)
