"""The server half of ``k8s_psat``, as SPIRE's: the payload ``{"cluster", "token"}`` names a
configured cluster and carries the agent pod's projected service-account token. The cluster's
TokenReview API checks the token (signature, expiry, audience, that its pod still exists); the
service account must be on the cluster's ``service_account_allow_list``; the pod and its node
are then read from the API for the selectors and the agent ID
``spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node UID>``.

The node is unique (one agent per node: a DaemonSet), and an agent re-attests with a fresh
token, so the method is re-attestable.

Selectors: ``cluster:``, ``agent_ns:``, ``agent_sa:``, ``agent_pod_name:``, ``agent_pod_uid:``,
``agent_node_ip:``, ``agent_node_name:``, ``agent_node_uid:``, and
``agent_node_label:<k>:<v>`` / ``agent_pod_label:<k>:<v>`` for the allowed label keys.
"""

from __future__ import annotations

from collections.abc import Mapping

from plastron.attestors.base import MAX_ATTESTATION_MESSAGE, AttestationResult, ChallengeFn
from plastron.attestors.k8s_psat.config import NAME, ClusterConfig
from plastron.attestors.k8s_psat.kube import (
    POD_NAME_KEY,
    POD_UID_KEY,
    KubeClient,
    KubeObject,
    TokenStatus,
)
from plastron.attestors.template import agent_path, is_canonical_segment
from plastron.errors import AttestationFailed, InvalidSelector, InvalidSpiffeId
from plastron.selector import Selector
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.strict_json import load_untrusted_object

MAX_TOKEN_LENGTH = 16 * 1024


def parse_payload(payload: bytes) -> tuple[str, str]:
    """(cluster, token) from SPIRE's ``{"cluster": ..., "token": ...}``."""
    doc = load_untrusted_object(
        payload, limit=MAX_ATTESTATION_MESSAGE, what=f"{NAME}: attestation payload",
        error=AttestationFailed,
    )  # fmt: skip
    cluster, token = doc.get("cluster"), doc.get("token")
    if not isinstance(cluster, str) or not cluster:
        raise AttestationFailed(f"{NAME}: attestation payload has no cluster name")
    if not isinstance(token, str) or not token:
        raise AttestationFailed(f"{NAME}: attestation payload has no token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AttestationFailed(f"{NAME}: token is longer than {MAX_TOKEN_LENGTH} characters")
    return cluster, token


class K8sPsatServerAttestor:
    name = NAME

    def __init__(
        self,
        clusters: Mapping[str, ClusterConfig],
        clients: Mapping[str, KubeClient],
        trust_domain: TrustDomain,
    ) -> None:
        self._clusters = clusters
        self._clients = clients
        self._td = trust_domain

    def __repr__(self) -> str:
        return f"K8sPsatServerAttestor(clusters={sorted(self._clusters)})"

    async def attest(self, payload: bytes, challenge: ChallengeFn) -> AttestationResult:
        cluster_name, token = parse_payload(payload)
        cluster = self._clusters.get(cluster_name)
        if cluster is None:
            raise AttestationFailed(f"{NAME}: not configured for cluster {cluster_name[:100]!r}")
        client = self._clients[cluster_name]
        status = await client.token_review(token, cluster.audience)
        namespace, account = self._check_status(cluster, status)
        pod_name, pod_uid = status.one_extra(POD_NAME_KEY), status.one_extra(POD_UID_KEY)
        pod = await client.pod(namespace, pod_name)
        if pod.uid != pod_uid or pod.service_account != account:
            raise AttestationFailed(
                f"{NAME}: pod {namespace}/{pod_name} is not the pod the token was issued to "
                f"(uid {pod.uid!r}, token's {pod_uid!r})"
            )
        if not pod.node_name:
            raise AttestationFailed(f"{NAME}: pod {namespace}/{pod_name} is not on a node")
        node = await client.node(pod.node_name)
        agent_id = self._agent_id(cluster_name, node)
        selectors = _selectors(cluster, namespace, account, pod, node)
        return AttestationResult(agent_id=agent_id, selectors=selectors, can_reattest=True)

    @staticmethod
    def _check_status(cluster: ClusterConfig, status: TokenStatus) -> tuple[str, str]:
        if not status.authenticated:
            reason = f": {status.error[:200]}" if status.error else ""
            raise AttestationFailed(
                f"{NAME}: token not authenticated according to the TokenReview API{reason}"
            )
        if status.audiences and not set(status.audiences) & set(cluster.audience):
            raise AttestationFailed(
                f"{NAME}: the TokenReview accepted the token for audiences "
                f"{list(status.audiences)[:5]}, none of {list(cluster.audience)}"
            )
        namespace, account = status.service_account()
        if f"{namespace}:{account}" not in cluster.service_account_allow_list:
            raise AttestationFailed(
                f"{NAME}: service account {namespace}:{account} is not in cluster "
                f"{cluster.name!r}'s service_account_allow_list"
            )
        return namespace, account

    def _agent_id(self, cluster: str, node: KubeObject) -> SpiffeId:
        if not is_canonical_segment(node.uid):
            raise AttestationFailed(
                f"{NAME}: node {node.name[:100]!r} has UID {node.uid[:100]!r}, which is not a "
                "canonical path segment"
            )
        try:
            return agent_path(self._td, f"/{NAME}/{cluster}/{node.uid}")
        except InvalidSpiffeId as exc:
            raise AttestationFailed(f"{NAME}: cannot build the agent ID: {exc}") from None


def _selectors(
    cluster: ClusterConfig, namespace: str, account: str, pod: KubeObject, node: KubeObject
) -> tuple[Selector, ...]:
    values = [
        f"cluster:{cluster.name}",
        f"agent_ns:{namespace}",
        f"agent_sa:{account}",
        f"agent_pod_name:{pod.name}",
        f"agent_pod_uid:{pod.uid}",
        f"agent_node_ip:{pod.host_ip}",
        f"agent_node_name:{node.name}",
        f"agent_node_uid:{node.uid}",
    ]
    values += [
        f"agent_node_label:{k}:{v}"
        for k, v in sorted(node.labels.items())
        if k in cluster.allowed_node_label_keys
    ]
    values += [
        f"agent_pod_label:{k}:{v}"
        for k, v in sorted(pod.labels.items())
        if k in cluster.allowed_pod_label_keys
    ]
    try:
        return tuple(Selector(NAME, v) for v in dict.fromkeys(values))
    except InvalidSelector as exc:
        raise AttestationFailed(
            f"{NAME}: the pod or node yields an invalid selector: {exc}"
        ) from None
