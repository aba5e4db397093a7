"""The token exchange with a Kubernetes projected service-account token: verified by the
server's k8s_psat NodeAttestor through a fake Kubernetes API on loopback (TokenReview, pod and
node), the cluster named in the body, selectors matched against entries under
``spiffe://example.org/spire/agentless/k8s_psat``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.cloud.kubernetes import FakeKubernetes, Pod, sa_claims

from .test_api import entry
from .test_token_exchange import AUDIENCE, Exchange, add_entries, exchange_server

_ids = itertools.count(1)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(tmp_path) as fake:
        yield fake


@pytest.fixture
async def exchange(tmp_path: Path, kube: FakeKubernetes) -> AsyncIterator[Exchange]:
    plugin = f"""NodeAttestor "k8s_psat" {{ plugin_data {{ clusters = {{
        "prod-1" = {{
            service_account_allow_list = ["payments:api"]
            kube_config_file = "{kube.kubeconfig()}"
        }}
    }} }} }}"""
    async with exchange_server(tmp_path, "", plugin) as ex:
        await add_entries(
            ex.harness,
            entry(
                "/payments/api",
                "/spire/agentless/k8s_psat",
                "k8s_psat:cluster:prod-1",
                "k8s_psat:agent_ns:payments",
                "k8s_psat:agent_sa:api",
            ),
        )
        yield ex


def pod_token(kube: FakeKubernetes, account: str = "api") -> str:
    n = next(_ids)
    kube.add_node(f"node-{n}", f"node-uid-{n}", {})
    pod = Pod("payments", f"api-{n}", f"pod-uid-{n}", f"node-{n}", service_account=account)
    kube.add_pod(pod)
    return kube.sign(sa_claims(pod))


async def test_pod_token_exchanged_once(exchange: Exchange, kube: FakeKubernetes) -> None:
    token = pod_token(kube)
    body = {"audience": AUDIENCE, "cluster": "prod-1"}
    status, doc = await exchange.post(token, body)
    assert (status, doc.get("spiffe_id")) == (200, "spiffe://example.org/payments/api"), doc
    status, doc = await exchange.post(token, body)
    assert (status, doc["error"]) == (400, "invalid_grant")
    assert "already exchanged" in doc["error_description"]


async def test_k8s_refusals(exchange: Exchange, kube: FakeKubernetes) -> None:
    status, doc = await exchange.post(pod_token(kube), {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_request")
    assert '"cluster"' in doc["error_description"]
    status, doc = await exchange.post(
        pod_token(kube, account="batch"), {"audience": AUDIENCE, "cluster": "prod-1"}
    )
    assert (status, doc["error"]) == (400, "invalid_grant"), doc
    assert "k8s_psat" in doc["error_description"]
