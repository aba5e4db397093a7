"""Configuration of both k8s_psat halves, with SPIRE's keys.

Server ``plugin_data``::

    clusters = {
        "<name>" = {
            service_account_allow_list = ["<namespace>:<service account>", ...]  # required
            audience = ["spire-server"]            # the audiences the token must carry
            kube_config_file = "/path/kubeconfig"  # "": the in-cluster service account
            allowed_node_label_keys = []
            allowed_pod_label_keys = []
        }
    }

Agent ``plugin_data``: ``cluster`` (required), ``token_path`` (default
``/var/run/secrets/tokens/spire-agent``, where the projected token is mounted).

A cluster name becomes a segment of the agent ID path, so it must be a canonical path segment
(``[A-Za-z0-9._-]``, not ``.`` or ``..``): it is refused at configuration time otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plastron.attestors.template import is_canonical_segment
from plastron.configs.block import Block
from plastron.errors import ConfigError

NAME = "k8s_psat"
DEFAULT_AUDIENCE = ("spire-server",)
DEFAULT_TOKEN_PATH = Path("/var/run/secrets/tokens/spire-agent")
MAX_CLUSTERS = 64


def check_cluster_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not is_canonical_segment(name):
        raise ConfigError(
            f"{where}: cluster name {str(name)[:100]!r} must be a canonical path segment "
            "(letters, digits, '.', '_', '-'; not '.' or '..'): it becomes part of the agent ID"
        )
    return name


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    service_account_allow_list: frozenset[str]
    audience: tuple[str, ...] = DEFAULT_AUDIENCE
    kube_config_file: Path | None = None  # None: in-cluster
    allowed_node_label_keys: frozenset[str] = frozenset()
    allowed_pod_label_keys: frozenset[str] = frozenset()

    @classmethod
    def from_block(cls, name: str, s: Block, base_dir: Path | None) -> ClusterConfig:
        accounts = s.string_list("service_account_allow_list")
        if not accounts:
            raise ConfigError(f"{s.where('service_account_allow_list')} is required and empty")
        for account in accounts:
            namespace, colon, service_account = account.partition(":")
            if not colon or not namespace or not service_account or ":" in service_account:
                raise ConfigError(
                    f"{s.where('service_account_allow_list')}: {account[:200]!r} is not "
                    "'<namespace>:<service account name>'"
                )
        audience = s.string_list("audience") if s.has("audience") else DEFAULT_AUDIENCE
        if not audience or not all(audience):
            raise ConfigError(f"{s.where('audience')} must list non-empty audiences")
        kube_config = s.string("kube_config_file", "")
        path = None
        if kube_config:
            path = Path(kube_config)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
        config = cls(
            name=name,
            service_account_allow_list=frozenset(accounts),
            audience=tuple(audience),
            kube_config_file=path,
            allowed_node_label_keys=frozenset(s.string_list("allowed_node_label_keys")),
            allowed_pod_label_keys=frozenset(s.string_list("allowed_pod_label_keys")),
        )
        s.finish()
        return config


@dataclass(frozen=True)
class K8sPsatServerConfig:
    clusters: Mapping[str, ClusterConfig]

    @classmethod
    def from_settings(cls, s: Block, *, base_dir: Path | None = None) -> K8sPsatServerConfig:
        block = s.block("clusters")
        clusters: dict[str, ClusterConfig] = {}
        for name in list(block.keys()):
            check_cluster_name(name, block.where(name))
            clusters[name] = ClusterConfig.from_block(name, block.block(name), base_dir)
        block.finish()
        if not clusters or len(clusters) > MAX_CLUSTERS:
            raise ConfigError(f"{s.where('clusters')}: configure 1 to {MAX_CLUSTERS} clusters")
        s.finish()
        return cls(clusters)


@dataclass(frozen=True)
class K8sPsatAgentConfig:
    cluster: str
    token_path: Path = DEFAULT_TOKEN_PATH

    @classmethod
    def from_settings(cls, s: Block, *, base_dir: Path | None = None) -> K8sPsatAgentConfig:
        cluster = check_cluster_name(s.string("cluster"), s.where("cluster"))
        token_path = Path(s.string("token_path", str(DEFAULT_TOKEN_PATH)))
        if base_dir is not None and not token_path.is_absolute():
            token_path = base_dir / token_path
        s.finish()
        return cls(cluster, token_path)
