"""k8s_psat configuration through the registered factories: SPIRE's keys, the API client built
at configure time (a missing or broken kubeconfig fails here, not at the first attestation),
cluster names checked to be canonical path segments, errors naming the plugin or key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl
import pytest

from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.plugins import PluginContext, load_plugins
from plastron.spiffe.ids import TrustDomain
from tests.cloud.kubernetes import FakeKubernetes

REGISTRIES = load_plugins(["plastron.attestors.k8s_psat.plugin"])
CONTEXT = PluginContext(trust_domain=TrustDomain("example.org"))


def server(text: str) -> Any:
    plugin = PluginConfig("NodeAttestor", "k8s_psat", hcl.loads(text))
    return REGISTRIES.server_node_attestors.create(plugin, CONTEXT)


def agent(text: str) -> Any:
    plugin = PluginConfig("NodeAttestor", "k8s_psat", hcl.loads(text))
    return REGISTRIES.agent_node_attestors.create(plugin, CONTEXT)


def clusters(body: str, name: str = "prod") -> str:
    return f'clusters = {{ "{name}" = {{ {body} }} }}'


def test_spire_config_builds_a_client_per_cluster(tmp_path: Path) -> None:
    with FakeKubernetes(tmp_path) as fake:
        kubeconfig = fake.kubeconfig()
    attestor = server(
        clusters(f'service_account_allow_list = ["spire:spire-agent"]\n'
                 f'kube_config_file = "{kubeconfig}"')
    )  # fmt: skip
    assert "prod" in repr(attestor)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('kube_config_file = "{dir}/missing.yaml"', "cannot read k8s_psat"),
        ('kube_config_file = "{dir}/notyaml"', "is not a kubeconfig"),
        ('kube_config_file = "{dir}/exec.yaml"', "exec plugins"),
        ('kube_config_file = "{dir}/noca.yaml"', "no certificate-authority"),
    ],
)
def test_bad_kubeconfig_fails_configuration(tmp_path: Path, body: str, expected: str) -> None:
    with FakeKubernetes(tmp_path) as fake:
        good = fake.kubeconfig().read_text()
    (tmp_path / "notyaml").write_text("{{{ [")
    (tmp_path / "exec.yaml").write_text(good.replace("token: ", "exec: {}\n    token: "))
    (tmp_path / "noca.yaml").write_text(good.replace("certificate-authority", "x-ca"))
    text = clusters('service_account_allow_list = ["a:b"]\n' + body.format(dir=tmp_path))
    with pytest.raises(ConfigError, match=expected):
        server(text)


def test_in_cluster_outside_a_pod_fails_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a pod"):
        server(clusters('service_account_allow_list = ["a:b"]'))


@pytest.mark.parametrize("name", ["a:b", "a/b", "..", "n\u00f6de", ""])
def test_cluster_name_must_be_a_canonical_segment(name: str) -> None:
    with pytest.raises(ConfigError, match="canonical path segment"):
        server(clusters('service_account_allow_list = ["a:b"]', name=name))
    with pytest.raises(ConfigError, match="canonical path segment"):
        agent(f'cluster = "{name}"')


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "service_account_allow_list is required"),
        ('service_account_allow_list = ["nocolon"]', "is not '<namespace>:<service account"),
        ('service_account_allow_list = ["a:b"]\nbogus = 1', 'unknown key ".*bogus"'),
    ],
)
def test_cluster_settings_are_checked(body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        server(clusters(body))


def test_agent_requires_the_cluster_and_defaults_the_token_path() -> None:
    with pytest.raises(ConfigError, match="cluster is required"):
        agent("")
    assert "/var/run/secrets/tokens/spire-agent" in repr(agent('cluster = "prod"'))
