"""The three Kubernetes API calls k8s_psat makes, over plain HTTPS with the documented REST
shapes: ``POST /apis/authentication.k8s.io/v1/tokenreviews``, ``GET
/api/v1/namespaces/<ns>/pods/<name>`` and ``GET /api/v1/nodes/<name>``.

The API server's answers are trusted (it is reached over TLS pinned to the cluster's CA), but
still parsed defensively: a member of the wrong shape is absent, bodies are bounded.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plastron.attestors.cloud_http import HttpResponse, request
from plastron.attestors.k8s_psat.config import NAME
from plastron.attestors.k8s_psat.kubeconfig import ApiAccess
from plastron.errors import AttestationFailed, ConfigError, Unavailable
from plastron.strict_json import load_untrusted_object

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"  # noqa: S105 (a URL path)
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class TokenStatus:
    """The ``status`` of a TokenReview."""

    authenticated: bool
    username: str = ""
    error: str = ""
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def one_extra(self, key: str) -> str:
        values = self.extra.get(key, ())
        if len(values) != 1 or not values[0]:
            raise AttestationFailed(
                f"{NAME}: the TokenReview status has no single {key} (is the token a projected "
                "service-account token bound to a pod?)"
            )
        return values[0]

    def service_account(self) -> tuple[str, str]:
        """(namespace, name) from ``system:serviceaccount:<ns>:<name>``."""
        rest = self.username.removeprefix(SERVICE_ACCOUNT_PREFIX)
        namespace, colon, name = rest.partition(":")
        if rest == self.username or not colon or not namespace or not name or ":" in name:
            raise AttestationFailed(
                f"{NAME}: token user {self.username[:200]!r} is not a service account"
            )
        return namespace, name


@dataclass(frozen=True)
class KubeObject:
    """The parts of a pod or node k8s_psat reads."""

    name: str
    uid: str
    labels: Mapping[str, str]
    node_name: str = ""  # pods: spec.nodeName
    service_account: str = ""  # pods: spec.serviceAccountName
    host_ip: str = ""  # pods: status.hostIP


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _text(doc: Mapping[str, Any], *path: str) -> str:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else ""


def _object(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def parse_token_status(doc: Mapping[str, Any]) -> TokenStatus:
    status = doc.get("status")
    if not isinstance(status, dict):
        raise Unavailable(f"{NAME}: the TokenReview answer has no status")
    user = _object(status, "user")
    extra_obj = _object(user, "extra")
    return TokenStatus(
        authenticated=status.get("authenticated") is True,
        username=_text(user, "username"),
        error=_text(status, "error"),
        audiences=_strings(status.get("audiences")),
        extra={k: _strings(v) for k, v in extra_obj.items() if isinstance(k, str)},
    )


def parse_object(doc: Mapping[str, Any]) -> KubeObject:
    labels = _object(_object(doc, "metadata"), "labels")
    return KubeObject(
        name=_text(doc, "metadata", "name"),
        uid=_text(doc, "metadata", "uid"),
        labels={k: v for k, v in labels.items() if isinstance(v, str)},
        node_name=_text(doc, "spec", "nodeName"),
        service_account=_text(doc, "spec", "serviceAccountName"),
        host_ip=_text(doc, "status", "hostIP"),
    )


class KubeClient:
    """One cluster's API server."""

    def __init__(self, cluster: str, access: ApiAccess) -> None:
        self.cluster = cluster
        self._access = access

    def __repr__(self) -> str:
        return f"KubeClient({self.cluster!r}, {self._access.server!r})"

    async def _call(
        self, method: str, path: str, what: str, body: bytes | None = None
    ) -> tuple[HttpResponse, str]:
        headers = {"Accept": "application/json"}
        try:
            bearer = self._access.bearer()
        except ConfigError as exc:  # the token file vanished since start
            raise Unavailable(f"{NAME}: cluster {self.cluster!r}: {exc}") from None
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        full = f"{NAME}: cluster {self.cluster!r}: {what}"
        resp = await request(
            method, self._access.server + path, what=full, headers=headers, body=body,
            tls=self._access.tls, use_proxy=False,
        )  # fmt: skip
        return resp, full

    @staticmethod
    def _json(resp: HttpResponse, what: str) -> dict[str, Any]:
        return load_untrusted_object(
            resp.body, limit=len(resp.body) + 1, what=what, error=Unavailable
        )

    async def token_review(self, token: str, audiences: Sequence[str]) -> TokenStatus:
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": list(audiences)},
        }
        resp, what = await self._call(
            "POST", TOKEN_REVIEW_PATH, "TokenReview", json.dumps(review).encode()
        )
        if not resp.ok:
            raise Unavailable(f"{what} answered HTTP {resp.status}: {resp.excerpt()}")
        return parse_token_status(self._json(resp, f"{what} answer"))

    async def _get(self, path: str, what: str) -> KubeObject:
        resp, full = await self._call("GET", path, what)
        if resp.status == 404:
            raise AttestationFailed(f"{full}: not found")
        if not resp.ok:
            raise Unavailable(f"{full} answered HTTP {resp.status}: {resp.excerpt()}")
        return parse_object(self._json(resp, f"{full} answer"))

    async def pod(self, namespace: str, name: str) -> KubeObject:
        ns, pod = (urllib.parse.quote(v, safe="") for v in (namespace, name))
        return await self._get(f"/api/v1/namespaces/{ns}/pods/{pod}", f"pod {namespace}/{name}")

    async def node(self, name: str) -> KubeObject:
        node = urllib.parse.quote(name, safe="")
        return await self._get(f"/api/v1/nodes/{node}", f"node {name}")
