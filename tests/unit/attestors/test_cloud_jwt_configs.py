"""gcp_iit and azure_msi configuration: SPIRE's keys as HCL gives them, defaults, and the
refusals (unknown keys, missing allow-lists, inline secrets, plain-HTTP key URLs, template
fields), through the registered factories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl
import pytest

from plastron.attestors.azure_msi.config import AzureMsiServerConfig
from plastron.attestors.gcp_iit.agent import GcpIitAgentAttestor
from plastron.attestors.gcp_iit.config import GOOGLE_JWKS_URL, GcpIitServerConfig
from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError
from plastron.host_services import HostServices
from plastron.plugins import PluginContext, load_plugins
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.cloud.tokens import Issuer

REGISTRIES = load_plugins(
    ["plastron.attestors.gcp_iit.plugin", "plastron.attestors.azure_msi.plugin"]
)
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


async def _never_attested(agent_id: SpiffeId) -> bool:
    return False


CONTEXT = PluginContext(
    trust_domain=TrustDomain("example.org"), services=HostServices(agent_attested=_never_attested)
)


def data(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl.loads(text)
    return parsed


def server(name: str, text: str, context: PluginContext = CONTEXT) -> Any:
    plugin = PluginConfig("NodeAttestor", name, data(text))
    return REGISTRIES.server_node_attestors.create(plugin, context)


def agent(name: str, text: str) -> Any:
    return REGISTRIES.agent_node_attestors.create(
        PluginConfig("NodeAttestor", name, data(text)), CONTEXT
    )


# ---- gcp_iit --------------------------------------------------------------------------------


def test_gcp_spire_config_loads_with_defaults() -> None:
    config = GcpIitServerConfig.from_settings(
        Block(data('projectid_allow_list = ["p1", "p2"]'), "pd")
    )
    assert config.projectid_allow_list == {"p1", "p2"}
    assert config.jwks_url == GOOGLE_JWKS_URL and config.audience == "spire-gcp-node-attestor"
    assert (
        config.agent_path_template.text == "/{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"
    )
    assert not config.use_instance_metadata and config.max_metadata_value_size == 128
    built = agent("gcp_iit", 'service_account = "sa@p.iam.gserviceaccount.com"')
    assert isinstance(built, GcpIitAgentAttestor)
    assert built.url == (
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/"
        "sa@p.iam.gserviceaccount.com/identity?audience=spire-gcp-node-attestor&format=full"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "projectid_allow_list is required"),
        ('projectid_allow_list = ["p"]\nbogus = 1', 'unknown key "plugins.NodeAttestor.gcp_iit'),
        (
            'projectid_allow_list = ["p"]\njwks_url = "http://keys.example/certs"',
            "must be an https://",
        ),
        ('projectid_allow_list = ["p"]\njwks_url = "file:///etc/keys"', "http:// or https://"),
        ('projectid_allow_list = ["p"]\njwks_url = "https://a"\njwks_file = "b"', "not both"),
        (
            'projectid_allow_list = ["p"]\nuse_instance_metadata = true',
            "needs service_account_file",
        ),
        ('projectid_allow_list = ["p"]\nagent_path_template = "/{{ .Tags.x }}"', "unknown field"),
        ('projectid_allow_list = ["p"]\nagent_path_template = "/{{ .Zone }}/"', "cannot produce"),
        ('projectid_allow_list = ["p"]\njwks_file = "/nonexistent/jwks.json"', "cannot read"),
    ],
)
def test_gcp_bad_server_configs_are_refused(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(ConfigError, match=message):
        server("gcp_iit", text)


def test_gcp_agent_refuses_a_url_as_host_and_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="host"):
        agent("gcp_iit", 'identity_token_host = "http://evil/x"')
    with pytest.raises(ConfigError, match="unknown key"):
        agent("gcp_iit", 'identity_token_hosts = "x"')


def test_server_factories_need_the_node_host_service() -> None:
    bare = PluginContext(trust_domain=TrustDomain("example.org"))
    with pytest.raises(ConfigError, match="needs the trust domain and the agent store"):
        server("gcp_iit", 'projectid_allow_list = ["p"]', bare)


# ---- azure_msi ------------------------------------------------------------------------------


def test_azure_spire_config_with_tenants_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZ_SECRET", "s3cret")
    (tmp_path / "jwks.json").write_text(Issuer.make(1).jwks())
    text = f"""
        tenants = {{
            "{TENANT.upper()}" = {{
                subscription_id = "sub-1"
                app_id = "app-1"
                app_secret_env = "AZ_SECRET"
            }}
            "00000000-1111-2222-3333-444444444444" = {{ resource_id = "http://example.org/app/" }}
        }}
        jwks_file = "{tmp_path}/jwks.json"
    """
    config = AzureMsiServerConfig.from_settings(Block(data(text), "pd"))
    first = config.tenants[TENANT]
    assert (
        first.tenant_id == TENANT.upper() and first.resource_id == "https://management.azure.com/"
    )
    assert first.app is not None and first.app.app_secret == "s3cret"
    assert "s3cret" not in repr(config)
    second = config.tenants["00000000-1111-2222-3333-444444444444"]
    assert second.resource_id == "http://example.org/app/" and second.app is None
    assert server("azure_msi", text).name == "azure_msi"


def tenant(body: str, extra: str = "") -> str:
    return f'tenants = {{ "{TENANT}" = {{ {body} }} }}\n{extra}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "give 1 to 100 tenants"),
        (tenant('app_id = "a"'), "subscription_id is required"),
        (tenant('subscription_id = "s"\napp_id = "a"'), "app_secret is required"),
        (tenant('subscription_id = "s"\napp_id = "a"\napp_secret = "x"'), "inline secret"),
        (tenant('resource = "x"'), 'unknown key "pd.tenants.'),
        (tenant("", 'resource_manager_endpoint = "http://arm.example/"'), "must be an https://"),
        (tenant("", 'agent_path_template = "/{{ .Zone }}"'), "unknown field"),
    ],
)
def test_azure_bad_server_configs_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AzureMsiServerConfig.from_settings(Block(data(text), "pd"))


def test_azure_agent_config() -> None:
    built = agent("azure_msi", 'resource_id = "api://x"\nmetadata_endpoint = "http://127.0.0.1:9"')
    assert built.name == "azure_msi"
    with pytest.raises(ConfigError, match="unknown key"):
        agent("azure_msi", 'resource = "api://x"')
