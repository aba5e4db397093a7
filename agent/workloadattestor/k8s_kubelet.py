"""The k8s attestor's kubelet client: ``GET /pods`` on the read-only or the secure port.

Secure port, as SPIRE: the kubelet's certificate is verified against ``kubelet_ca_path``
(unless ``skip_kubelet_verification``), with the node name as the expected host name when one
is known, or the chain alone when the kubelet is reached on 127.0.0.1; the agent proves itself
with a client certificate, a bearer token (the service account token by default) or nothing
(``use_anonymous_authentication``). Credentials are read again every ``reload_interval``:
service account tokens rotate.

Callers share the pod list: at most one request is in flight, requests start at least
``poll_retry_interval`` apart, and a list fetched less than that long ago is reused by a caller
that has not seen it yet. A burst of Workload API calls costs the kubelet one request.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.agent.workloadattestor.httpget import Endpoint, HttpGetError, get_json
from plastron.agent.workloadattestor.k8s_pods import MalformedPodList, pods_by_uid
from plastron.errors import ConfigError

# A node's pod list: ~110 pods of a few tens of KiB each at most.
MAX_POD_LIST_BYTES = 64 * 1024 * 1024
MAX_CREDENTIAL_BYTES = 1024 * 1024
KUBELET_REQUEST_TIMEOUT = 10.0


class KubeletError(Exception):
    """The pod list could not be had (request, status, shape or credentials)."""


@dataclass(frozen=True)
class KubeletSettings:
    secure: bool
    port: int
    node_name: str
    skip_verification: bool
    ca_path: Path
    token_path: Path
    certificate_path: Path | None
    private_key_path: Path | None
    anonymous: bool
    reload_interval: float


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CREDENTIAL_BYTES + 1)
    except OSError as exc:
        raise KubeletError(f"unable to load {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise KubeletError(f"{what} {path} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    return data


def _tls_context(settings: KubeletSettings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.skip_verification:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca = _read(settings.ca_path, "kubelet CA").decode("ascii", "replace")
        try:
            ctx.load_verify_locations(cadata=ca)
        except (ssl.SSLError, ValueError) as exc:
            raise KubeletError(f"unable to parse kubelet CA {settings.ca_path}: {exc}") from None
        # On 127.0.0.1 there is no name to check: verify the chain only, as SPIRE.
        ctx.check_hostname = bool(settings.node_name)
    if settings.certificate_path is not None and settings.private_key_path is not None:
        try:
            ctx.load_cert_chain(settings.certificate_path, settings.private_key_path)
        except (OSError, ssl.SSLError) as exc:
            raise KubeletError(
                f"unable to load the client keypair {settings.certificate_path}, "
                f"{settings.private_key_path}: {exc}"
            ) from None
    return ctx


def _token(settings: KubeletSettings) -> str | None:
    if not settings.secure or settings.anonymous or settings.certificate_path is not None:
        return None
    token = _read(settings.token_path, "token").decode("utf-8", "replace").strip()
    if not token or not token.isprintable():
        raise KubeletError(f"token {settings.token_path} is empty or not printable")
    return token


class KubeletClient:
    """One kubelet; credentials reloaded when older than ``reload_interval``."""

    def __init__(self, settings: KubeletSettings) -> None:
        self._settings = settings
        self._endpoint, self._token = self._load()
        self._loaded_at = time.monotonic()

    @classmethod
    def open(cls, settings: KubeletSettings) -> KubeletClient:
        """Build the client, reading its credentials now: a config naming missing or bad
        files fails at start."""
        try:
            return cls(settings)
        except KubeletError as exc:
            raise ConfigError(f"k8s: {exc}") from None

    def _load(self) -> tuple[Endpoint, str | None]:
        s = self._settings
        if not s.secure:
            return Endpoint("127.0.0.1", s.port, timeout=KUBELET_REQUEST_TIMEOUT), None
        endpoint = Endpoint(
            s.node_name or "127.0.0.1",
            s.port,
            tls=_tls_context(s),
            timeout=KUBELET_REQUEST_TIMEOUT,
        )
        return endpoint, _token(s)

    def pod_list(self) -> dict[str, dict[str, Any]]:
        """The node's pods by UID (blocking)."""
        if time.monotonic() - self._loaded_at >= self._settings.reload_interval:
            self._endpoint, self._token = self._load()
            self._loaded_at = time.monotonic()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            return pods_by_uid(get_json(self._endpoint, "/pods", MAX_POD_LIST_BYTES, headers))
        except HttpGetError as exc:
            raise KubeletError(str(exc)) from None
        except MalformedPodList as exc:
            raise KubeletError(f"kubelet {self._endpoint.describe()}/pods: {exc}") from None


class SharedPodList:
    """The pod list shared by concurrent attestations (see the module docstring)."""

    def __init__(self, client: KubeletClient, poll_retry_interval: float) -> None:
        self._client = client
        self._interval = poll_retry_interval
        self._lock = asyncio.Lock()
        self._version = 0
        self._pods: dict[str, dict[str, Any]] | None = None
        self._started_at: float | None = None

    async def newer_than(self, seen: int) -> tuple[int, dict[str, dict[str, Any]]]:
        """A pod list the caller has not seen (version > ``seen``): the shared one while
        fresh, else one fetched no sooner than ``poll_retry_interval`` after the last."""
        async with self._lock:
            now = time.monotonic()
            started = self._started_at
            fresh = started is not None and now < started + self._interval
            if fresh and self._pods is not None and self._version > seen:
                return self._version, self._pods
            if fresh and started is not None:
                await asyncio.sleep(started + self._interval - now)
            self._started_at = time.monotonic()
            pods = await asyncio.to_thread(self._client.pod_list)
            self._version += 1
            self._pods = pods
            return self._version, pods
