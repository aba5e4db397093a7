"""Both k8s_psat halves' factories and ``register``. The server half builds one API client per
cluster here, so a missing kubeconfig, CA or token file fails configuration."""

from __future__ import annotations

from plastron.attestors.k8s_psat.agent import K8sPsatAgentAttestor
from plastron.attestors.k8s_psat.config import NAME, K8sPsatAgentConfig, K8sPsatServerConfig
from plastron.attestors.k8s_psat.kube import KubeClient
from plastron.attestors.k8s_psat.kubeconfig import from_kubeconfig, in_cluster
from plastron.attestors.k8s_psat.server import K8sPsatServerAttestor
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, Registries


def check_server(plugin: PluginConfig, context: PluginContext) -> None:
    """The settings and each cluster's kubeconfig, CA and token files; no API call."""
    settings = plugin.settings()
    config = K8sPsatServerConfig.from_settings(settings, base_dir=context.base_dir)
    for name, cluster in config.clusters.items():
        where = f"{NAME}: {settings.where('clusters')}.{name}"
        path = cluster.kube_config_file
        from_kubeconfig(path, where) if path is not None else in_cluster(where)


def check_agent(plugin: PluginConfig, context: PluginContext) -> None:
    K8sPsatAgentConfig.from_settings(plugin.settings(), base_dir=context.base_dir)


def create_server_attestor(plugin: PluginConfig, context: PluginContext) -> K8sPsatServerAttestor:
    settings = plugin.settings()
    config = K8sPsatServerConfig.from_settings(settings, base_dir=context.base_dir)
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the server attestor needs the trust domain")
    clients = {}
    for name, cluster in config.clusters.items():
        where = f"{NAME}: {settings.where('clusters')}.{name}"
        path = cluster.kube_config_file
        access = from_kubeconfig(path, where) if path is not None else in_cluster(where)
        clients[name] = KubeClient(name, access)
    return K8sPsatServerAttestor(config.clusters, clients, context.trust_domain)


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> K8sPsatAgentAttestor:
    settings = plugin.settings()
    return K8sPsatAgentAttestor(
        K8sPsatAgentConfig.from_settings(settings, base_dir=context.base_dir)
    )


def register(registries: Registries) -> None:
    registries.server_node_attestors.register(
        NAME, create_server_attestor, extra="k8s", check=check_server
    )
    registries.agent_node_attestors.register(NAME, create_agent_attestor, check=check_agent)
