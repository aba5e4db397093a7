"""docs/sds.md's examples are valid: the Envoy bootstrap against data-plane-api's protos (via
xds-protos), the agent block through the agent's config parser, the two agreeing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2

# Types the example's typed_config "@type"s name: imported so the Any fields resolve.
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from plastron.agent.config import SdsConfig, parse_agent_config

DOC = Path(__file__).resolve().parents[3] / "docs" / "sds.md"


def _block(lang: str) -> str:
    found = re.search(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"no {lang} block in {DOC}"
    return found.group(1)


def _envoy() -> Any:
    return json_format.ParseDict(yaml.safe_load(_block("yaml")), bootstrap_pb2.Bootstrap())


def _agent_config_text() -> str:
    required = (
        'trust_domain = "example.org"\n data_dir = "/d"\n server_address = "s"\n'
        ' trust_bundle_path = "/b.pem"\n'
    )
    hcl = _block("hcl").replace("agent {\n", "agent {\n" + required, 1)
    return hcl + '\nplugins { NodeAttestor "join_token" {} }\n'


def test_envoy_example_is_a_valid_bootstrap() -> None:
    bootstrap = _envoy()
    agent_cluster = bootstrap.static_resources.clusters[0]
    assert agent_cluster.name == "plastron_agent"


def test_agent_example_parses_and_envoy_uses_its_socket() -> None:
    config = parse_agent_config(_agent_config_text())
    assert config.sds == SdsConfig()
    assert config.disable_sds_api is False
    endpoint = _envoy().static_resources.clusters[0].load_assignment.endpoints[0]
    assert endpoint.lb_endpoints[0].endpoint.address.pipe.path == str(config.socket_path)
