"""k8s_psat runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py) and the
refusals specific to it, each through the attestor and through AttestAgent with no node row
written.

A fake Kubernetes API server on loopback (TLS with a test CA, reached through a kubeconfig)
answers TokenReview for tokens it signs with a test key, and serves the agent's pod and node.
Good attempts come from the real agent half reading the token file.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from plastron.attestors.k8s_psat.agent import K8sPsatAgentAttestor
from plastron.attestors.k8s_psat.config import K8sPsatAgentConfig
from tests.cloud.kubernetes import FakeKubernetes, Pod, sa_claims
from tests.cloud.tokens import hmac_signed, public_pem, rsa_key, unsigned
from tests.conformance.nodeattestor import (
    NodeAttestorAdapter,
    NodeAttestorConformance,
    expect_refused,
)
from tests.conformance.nodeattestor_env import (
    Attempt,
    AttestEnv,
    in_process_env,
    no_challenge_expected,
)

_ids = itertools.count(1)


class K8sPsatAdapter(NodeAttestorAdapter):
    kind = "k8s_psat"
    message_prefixes = ("k8s_psat: ",)
    not_applicable: ClassVar[dict[str, str]] = {
        "challenge": "k8s_psat has no challenge round: the payload is the token",
        "replay": "a projected service-account token is a bearer credential the agent presents "
        "again at each re-attestation until the kubelet rotates it (SPIRE's behaviour); a "
        "stolen token is refused once expired (the expired case)",
    }

    def __init__(self, directory: Path, kube: FakeKubernetes) -> None:
        self.dir = directory
        self.kube = kube
        self.kubeconfig = kube.kubeconfig()

    def server_plugins(self, case: str) -> str:
        return f"""NodeAttestor "k8s_psat" {{ plugin_data {{ clusters = {{
            "prod-1" = {{
                service_account_allow_list = ["spire:spire-agent"]
                kube_config_file = "{self.kubeconfig}"
                allowed_node_label_keys = ["zone"]
                allowed_pod_label_keys = ["app"]
            }}
        }} }} }}"""

    def pod(self, node_uid: str | None = None) -> Pod:
        n = next(_ids)
        self.kube.add_node(f"node-{n}", node_uid or f"node-uid-{n}", {"zone": "a", "x": "y"})
        pod = Pod("spire", f"agent-{n}", f"pod-uid-{n}", f"node-{n}", labels={"app": "spire"})
        self.kube.add_pod(pod)
        return pod

    def attempt(self, token: str, label: str, cluster: str = "prod-1") -> Attempt:
        payload = f'{{"cluster": "{cluster}", "token": "{token}"}}'.encode()
        return Attempt(payload, no_challenge_expected, label)

    def token(self, **override: Any) -> str:
        return self.kube.sign(sa_claims(self.pod(), **override))

    async def good(self, env: AttestEnv) -> Attempt:
        token_file = self.dir / f"token-{next(_ids)}"
        token_file.write_text(self.token())
        agent = K8sPsatAgentAttestor(K8sPsatAgentConfig("prod-1", token_file))
        return Attempt(await agent.payload(), agent.answer, "projected token from the file")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        claims = sa_claims(self.pod())
        return [
            self.attempt(hmac_signed(claims, public_pem(self.kube.signing_key), "k"),
                         "HS256 keyed with the cluster's public key"),
            self.attempt(unsigned(claims, {"alg": "none", "kid": "k"}), "alg none"),
        ]  # fmt: skip

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        return [self.attempt(self.token(now=old), "expired an hour ago")]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
        return [self.attempt(self.token(now=later), "issued ten minutes from now")]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        forged = self.kube.sign(sa_claims(self.pod()), key=rsa_key(22))
        return [self.attempt(forged, "signed by a key the cluster does not hold")]

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        token = self.kube.sign(sa_claims(self.pod(node_uid=value)))
        return [self.attempt(token, f"node UID {value!r}")]


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(tmp_path) as fake:
        yield fake


@pytest.fixture
def adapter(tmp_path: Path, kube: FakeKubernetes) -> K8sPsatAdapter:
    return K8sPsatAdapter(tmp_path, kube)


class TestK8sPsatConformance(NodeAttestorConformance):
    pass


# ---- behaviour specific to k8s_psat ----------------------------------------------------------


async def test_selectors_agent_id_and_reattestation(adapter: K8sPsatAdapter) -> None:
    """The agent ID is /k8s_psat/<cluster>/<node UID>; the selectors are SPIRE's, with labels
    only for the allowed keys; the same node attests again (re-attestable)."""
    async with in_process_env(adapter.server_plugins("good")) as env:
        pod = adapter.pod()
        token = adapter.kube.sign(sa_claims(pod))
        n = pod.name.removeprefix("agent-")
        for _ in range(2):
            out = await env.attest_api("k8s_psat", adapter.attempt(token, "good"))
            assert out.agent_id == f"spiffe://example.org/spire/agent/k8s_psat/prod-1/node-uid-{n}"
        result = await env.attest_direct("k8s_psat", adapter.attempt(token, "good"))
        assert not isinstance(result, Exception), result
        assert result.can_reattest
        assert sorted(s.value for s in result.selectors) == sorted([
            "cluster:prod-1", "agent_ns:spire", "agent_sa:spire-agent",
            f"agent_pod_name:agent-{n}", f"agent_pod_uid:pod-uid-{n}", "agent_node_ip:10.0.0.7",
            f"agent_node_name:node-{n}", f"agent_node_uid:node-uid-{n}",
            "agent_node_label:zone:a", "agent_pod_label:app:spire",
        ])  # fmt: skip


async def test_bad_tokens_are_refused_cleanly(
    adapter: K8sPsatAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong audience, a service account not on the allow list, a cluster not configured, a
    pod whose UID no longer matches the token's (a deleted pod's name reused)."""
    async with in_process_env(adapter.server_plugins("bad")) as env:
        reused = adapter.pod()
        stale = adapter.kube.sign(sa_claims(Pod(**{**reused.__dict__, "uid": "old-uid"})))
        bad = [
            ("wrong audience", adapter.attempt(adapter.token(audience="vault"), "aud"),
             "token not authenticated"),
            ("service account not allowed",
             adapter.attempt(adapter.token(service_account="default"), "sa"),
             "service account spire:default is not in cluster 'prod-1'"),
            ("unknown cluster", adapter.attempt(adapter.token(), "cluster", cluster="other"),
             "not configured for cluster 'other'"),
            ("stale pod", adapter.attempt(stale, "stale"), "is not the pod the token was issued"),
        ]  # fmt: skip

        async def make() -> list[Attempt]:
            return [attempt for _, attempt, _ in bad]

        messages = await expect_refused(adapter, env, make, caplog)
        for (label, _, expected), message in zip(bad, messages, strict=True):
            assert expected in message, f"{label}: {message}"
