"""The ``k8s`` workload attestor: SPIRE's k8s selectors for a caller in a Kubernetes pod.

The caller's container ID and pod UID come from its /proc/<pid>/cgroup
(:mod:`.containerinfo`); the pod from the kubelet's pod list (:mod:`.k8s_kubelet`), the one
whose container status names that container ID. A process in no container gets no k8s
selectors. A container the kubelet does not list yet (just started) is looked for again,
``max_poll_attempts`` times ``poll_retry_interval`` apart, then refused.

Selectors (``k8s:`` + value, as SPIRE): ``sa``, ``ns``, ``node-name``, ``pod-uid``,
``pod-name``, ``pod-image-count``, ``pod-init-image-count``, ``pod-image``, ``pod-init-image``,
``pod-label:<key>:<value>``, ``pod-owner:<kind>:<name>``, ``pod-owner-uid:<kind>:<uid>``, and
(unless ``disable_container_selectors``) ``container-name`` and ``container-image``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.agent.workloadattestor.containerinfo import (
    ContainerInfo,
    container_info,
    read_cgroups,
)
from plastron.agent.workloadattestor.k8s_kubelet import (
    KubeletClient,
    KubeletError,
    KubeletSettings,
    SharedPodList,
)
from plastron.agent.workloadattestor.k8s_pods import (
    MalformedPodList,
    container_selector_values,
    find_container,
    pod_selector_values,
)
from plastron.agent.workloadattestor.selector_values import selectors_of
from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext, Registries
from plastron.selector import Selector

NAME = "k8s"
DEFAULT_SECURE_PORT = 10250
DEFAULT_CA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
DEFAULT_NODE_NAME_ENV = "MY_NODE_NAME"
# SPIRE keys for features Plastron does not have (they need the API server or sigstore).
UNSUPPORTED_KEYS = ("disable_kubelet_client", "enable_namespace_labels", "sigstore", "experimental")


@dataclass(frozen=True)
class K8sConfig:
    kubelet: KubeletSettings
    max_poll_attempts: int = 60
    poll_retry_interval: float = 0.5
    disable_container_selectors: bool = False


def _port(settings: Block) -> tuple[bool, int]:
    read_only = settings.integer("kubelet_read_only_port", 0, 0, 65535)
    secure_port = settings.integer("kubelet_secure_port", 0, 0, 65535)
    if read_only and secure_port:
        raise ConfigError(
            f"{settings.where('kubelet_read_only_port')}: cannot use both the read-only and "
            "the secure port"
        )
    if read_only:
        return False, read_only
    return True, secure_port or DEFAULT_SECURE_PORT


def _kubelet_settings(settings: Block, context: PluginContext) -> KubeletSettings:
    secure, port = _port(settings)
    cert = settings.optional_string("certificate_path")
    key = settings.optional_string("private_key_path")
    token = settings.optional_string("token_path")
    anonymous = settings.boolean("use_anonymous_authentication", False)
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{settings.where('certificate_path')} and private_key_path go together; set both"
        )
    if anonymous and (cert or token):
        raise ConfigError(
            f"{settings.where('use_anonymous_authentication')} cannot be used with "
            "token_path, certificate_path or private_key_path"
        )
    node_name = settings.optional_string("node_name")
    env = settings.string("node_name_env", DEFAULT_NODE_NAME_ENV)
    return KubeletSettings(
        secure=secure,
        port=port,
        node_name=node_name or os.environ.get(env, ""),
        skip_verification=settings.boolean("skip_kubelet_verification", False),
        ca_path=context.resolve(settings.string("kubelet_ca_path", DEFAULT_CA_PATH)),
        token_path=context.resolve(token or DEFAULT_TOKEN_PATH),
        certificate_path=context.resolve(cert) if cert else None,
        private_key_path=context.resolve(key) if key else None,
        anonymous=anonymous,
        reload_interval=settings.duration(
            "reload_interval", dt.timedelta(minutes=1)
        ).total_seconds(),
    )


def parse_config(settings: Block, context: PluginContext) -> K8sConfig:
    for key in UNSUPPORTED_KEYS:
        if settings.has(key):
            raise ConfigError(f"{settings.where(key)} is a SPIRE option Plastron does not support")
    kubelet = _kubelet_settings(settings, context)
    # SPIRE takes 0 as "the default".
    attempts = settings.integer("max_poll_attempts", 0, 0, 100_000) or K8sConfig.max_poll_attempts
    interval = settings.duration("poll_retry_interval", dt.timedelta(milliseconds=500))
    if not settings.boolean("use_new_container_locator", True):
        raise ConfigError(
            f"{settings.where('use_new_container_locator')}: only the current container "
            "locator is implemented; remove the key or set it to true"
        )
    settings.boolean("verbose_container_locator_logs", False)
    config = K8sConfig(
        kubelet=kubelet,
        max_poll_attempts=attempts,
        poll_retry_interval=interval.total_seconds(),
        disable_container_selectors=settings.boolean("disable_container_selectors", False),
    )
    settings.finish()
    return config


class K8sWorkloadAttestor:
    name = NAME

    def __init__(self, config: K8sConfig, *, proc_root: Path = Path("/proc")) -> None:
        self._config = config
        self._proc_root = proc_root
        self._pods = SharedPodList(KubeletClient.open(config.kubelet), config.poll_retry_interval)

    async def attest(self, pid: int) -> list[Selector]:
        cgroups = await asyncio.to_thread(read_cgroups, self._proc_root, pid, NAME)
        try:
            info = container_info(cgroups, want_pod_uid=True)
        except AttestationFailed as exc:
            raise AttestationFailed(f"{NAME}: process {pid}: {exc}") from None
        if info.container_id is None:
            return []
        return await self._look_up(info)

    async def _look_up(self, info: ContainerInfo) -> list[Selector]:
        seen = 0
        error: KubeletError | None = None
        for _ in range(self._config.max_poll_attempts):
            try:
                seen, pods = await self._pods.newer_than(seen)
            except KubeletError as exc:
                error = exc
                continue
            error = None
            try:
                values = self._match(pods, info)
            except MalformedPodList as exc:
                raise AttestationFailed(f"{NAME}: kubelet pod list: {exc}") from None
            if values:
                return selectors_of(NAME, values)
        attempts = self._config.max_poll_attempts
        if error is not None:
            raise AttestationFailed(f"{NAME}: no pod list after {attempts} attempts: {error}")
        pod = f" in pod {info.pod_uid}" if info.pod_uid else ""
        raise AttestationFailed(
            f"{NAME}: container {info.container_id}{pod} is not in the kubelet's pod list "
            f"after {attempts} attempts"
        )

    def _match(self, pods: dict[str, dict[str, Any]], info: ContainerInfo) -> list[str]:
        """The selector values of the one pod holding the caller's container; none yet."""
        found: list[str] = []
        for uid, pod in pods.items():
            if info.pod_uid is not None and uid != info.pod_uid:
                continue
            values = self._pod_values(pod, info)
            if values and found:
                # Two pods claim the container: choosing either could be choosing wrong.
                raise AttestationFailed(
                    f"{NAME}: two pods list container {info.container_id}; refusing both"
                )
            found = values or found
        return found

    def _pod_values(self, pod: dict[str, Any], info: ContainerInfo) -> list[str]:
        assert info.container_id is not None
        status = find_container(pod, info.container_id)
        if status is not None:
            values = pod_selector_values(pod)
            if not self._config.disable_container_selectors:
                values += container_selector_values(status)
            return values
        if info.pod_uid is not None and self._config.disable_container_selectors:
            # The pod is known from the cgroup but its container not listed yet (a postStart
            # hook still running): pod selectors are what the operator asked for.
            return pod_selector_values(pod)
        return []


def check(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings and the kubelet credentials (CA, token or client keypair), read as the
    attestor reads them at start; the kubelet is not contacted."""
    KubeletClient.open(parse_config(plugin.settings(), context).kubelet)


def create(plugin: PluginConfig, context: PluginContext) -> K8sWorkloadAttestor:
    return K8sWorkloadAttestor(parse_config(plugin.settings(), context))


def register(registries: Registries) -> None:
    registries.workload_attestors.register(NAME, create, check=check)
