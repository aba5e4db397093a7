"""Rejections: unknown keys name their path, wrong types, validation rules, arbitrary text."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plastron.agent.config import parse_agent_config
from plastron.errors import ConfigError
from plastron.server.config import parse_server_config

NA = 'NodeAttestor "join_token" {}'


def server(body: str = "", plugins: str = NA, extra: str = "") -> str:
    return (
        f'server {{\n trust_domain = "example.org"\n data_dir = "/d"\n{body}\n}}\n'
        f"plugins {{\n{plugins}\n}}\n{extra}"
    )


def agent(body: str = 'trust_bundle_path = "/b.pem"', plugins: str = NA, extra: str = "") -> str:
    return (
        f'agent {{\n trust_domain = "example.org"\n data_dir = "/d"\n'
        f' server_address = "s.example.org"\n{body}\n}}\nplugins {{\n{plugins}\n}}\n{extra}'
    )


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (server('trust_domian = "x"'), "server.trust_domian"),
        (server("ratelimit { signin = true }"), "server.ratelimit.signin"),
        (server("experimental { foo = 1 }"), "server.experimental.foo"),
        (server('ca_subject { org = ["x"] }'), "server.ca_subject.org"),
        (server(extra="health_checks { port = 1 }"), "health_checks.port"),
        (server(extra='colour = "blue"'), "colour"),
        (
            server(plugins=NA + '\nKeyManager "memory" { plugin_dta {} }'),
            "plugins.KeyManager.memory.plugin_dta",
        ),
        (server(plugins='NodeAttestor "a" "b" {}'), "plugins.NodeAttestor.a.b"),
        (agent('trust_bundle_path = "/b"\nsync_interval = "5s"'), "agent.sync_interval"),
        (agent(extra="telemetry {}\nserver {}"), "server"),
    ],
)
def test_unknown_key_names_its_path(text: str, path: str) -> None:
    parse = parse_agent_config if text.startswith("agent") else parse_server_config
    with pytest.raises(ConfigError, match=re.escape(f'unknown key "{path}"')):
        parse(text)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('bind_port = "http"', "server.bind_port must be an integer"),
        ("bind_port = true", "server.bind_port must be an integer"),
        ("bind_port = 70000", "server.bind_port must be between 0 and 65535"),
        ("bind_address = 5", "server.bind_address must be a string"),
        ('ca_ttl = "1d"', "server.ca_ttl is not a duration"),
        ('ca_ttl = "0s"', "server.ca_ttl must be longer than zero"),
        ('ca_key_type = "ed25519"', "server.ca_key_type: unknown key type 'ed25519'"),
        ('log_level = "LOUD"', "server.log_level must be one of"),
        ('log_format = "xml"', "server.log_format must be one of text, json"),
        ('admin_ids = "spiffe://example.org/a"', "server.admin_ids must be a list of strings"),
        ('admin_ids = ["spiffe://Example.org/a"]', "server.admin_ids"),
        ('admin_ids = ["spiffe://example.org"]', "trust domain ID"),
        ('ratelimit { attestation = "no" }', "server.ratelimit.attestation must be true or false"),
        ('ratelimit = "on"', '"server.ratelimit" must be a block'),
        ('x = 1\nca_subject { country = "US" }', "server.ca_subject.country"),
    ],
)
def test_wrong_types_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_server_config(server(body.replace("x = 1\n", "")))


def test_server_required_settings() -> None:
    with pytest.raises(ConfigError, match='"server" block is required'):
        parse_server_config(f"plugins {{ {NA} }}")
    with pytest.raises(ConfigError, match=re.escape("server.trust_domain is required")):
        parse_server_config(f'server {{ data_dir = "/d" }}\nplugins {{ {NA} }}')
    with pytest.raises(ConfigError, match=re.escape("server.data_dir is required")):
        parse_server_config(f'server {{ trust_domain = "a.b" }}\nplugins {{ {NA} }}')
    with pytest.raises(
        ConfigError, match=re.escape("server.trust_domain is not a valid trust domain")
    ):
        parse_server_config(server().replace("example.org", "Example.org"))


def test_plugin_rules() -> None:
    with pytest.raises(ConfigError, match="at least one NodeAttestor"):
        parse_server_config(server(plugins=""))
    with pytest.raises(ConfigError, match="at least one NodeAttestor"):
        parse_server_config(server(plugins='NodeAttestor "join_token" { enabled = false }'))
    two_ds = NA + '\nDataStore "sql" {}\nDataStore "other" {}'
    with pytest.raises(
        ConfigError, match='at most one DataStore may be enabled \\(got "sql", "other"\\)'
    ):
        parse_server_config(server(plugins=two_ds))
    two_km = NA + '\nKeyManager "memory" {}\nKeyManager "disk" {}'
    with pytest.raises(ConfigError, match="at most one KeyManager"):
        parse_server_config(server(plugins=two_km))
    with pytest.raises(ConfigError, match="at most one KeyManager"):
        parse_agent_config(agent(plugins=two_km))
    dup = NA + "\n" + NA
    with pytest.raises(ConfigError, match='NodeAttestor "join_token" is configured more than once'):
        parse_server_config(server(plugins=dup))
    with pytest.raises(
        ConfigError, match=re.escape('unknown plugin type "plugins.UpstreamCA"; known: ')
    ):
        parse_server_config(server(plugins=NA + '\nUpstreamCA "disk" {}'))
    with pytest.raises(ConfigError, match=re.escape('unknown plugin type "plugins.DataStore"')):
        parse_agent_config(agent(plugins=NA + '\nDataStore "sql" {}'))
    with pytest.raises(ConfigError, match="external plugins"):
        parse_server_config(server(plugins='NodeAttestor "x" { plugin_cmd = "/bin/x" }'))
    with pytest.raises(
        ConfigError,
        match=re.escape("plugins.NodeAttestor.join_token.enabled must be true or false"),
    ):
        parse_server_config(server(plugins='NodeAttestor "join_token" { enabled = "yes" }'))
    with pytest.raises(ConfigError, match=re.escape('"plugins.NodeAttestor" must be written as')):
        parse_server_config(server(plugins='NodeAttestor = "join_token"'))


def test_plugin_shapes_from_pyhcl_are_normalised() -> None:
    # Same type in one block, across two plugins blocks, and mixed: all flatten in order.
    text = server(
        plugins=NA + '\nNodeAttestor "x509pop" { plugin_data { a = 1 } }',
        extra='plugins { WorkloadAttestor "unix" {} }',
    )
    with pytest.raises(ConfigError, match="unknown plugin type"):
        parse_server_config(text)  # WorkloadAttestor is an agent plugin
    c = parse_agent_config(
        agent(
            plugins=NA, extra='plugins { WorkloadAttestor "unix" {}\nWorkloadAttestor "docker" {} }'
        )
    )
    assert [(p.type, p.name) for p in c.plugins] == [
        ("NodeAttestor", "join_token"),
        ("WorkloadAttestor", "unix"),
        ("WorkloadAttestor", "docker"),
    ]


def test_repeated_singular_block_is_refused() -> None:
    text = server(extra='server { log_level = "DEBUG" }\nserver { log_level = "INFO" }')
    with pytest.raises(ConfigError, match='block "server" is given'):
        parse_server_config(text)


def test_agent_trust_bundle_rules() -> None:
    with pytest.raises(ConfigError, match="exactly one of trust_bundle_path or trust_bundle_url"):
        parse_agent_config(agent(body=""))
    both = 'trust_bundle_path = "/b"\ntrust_bundle_url = "https://x/b"'
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_agent_config(agent(body=both))
    with pytest.raises(ConfigError, match="insecure_bootstrap cannot be combined"):
        parse_agent_config(agent(body='trust_bundle_path = "/b"\ninsecure_bootstrap = true'))
    with pytest.raises(ConfigError, match="must be an https:// URL"):
        parse_agent_config(agent(body='trust_bundle_url = "http://x/b"'))
    with pytest.raises(
        ConfigError, match=re.escape("agent.trust_bundle_format must be one of pem, spiffe")
    ):
        parse_agent_config(agent(body='trust_bundle_path = "/b"\ntrust_bundle_format = "der"'))
    c = parse_agent_config(agent(body="insecure_bootstrap = true"))
    assert c.insecure_bootstrap and c.trust_bundle_path is None
    c = parse_agent_config(
        agent(body='trust_bundle_url = "https://x/b"\ntrust_bundle_format = "spiffe"')
    )
    assert c.trust_bundle_url == "https://x/b" and c.trust_bundle_format == "spiffe"


def test_agent_join_token() -> None:
    c = parse_agent_config(agent(body='insecure_bootstrap = true\njoin_token = "tok-123"'))
    assert c.join_token == "tok-123"
    assert "tok-123" not in repr(c)
    with pytest.raises(ConfigError, match="join_token or join_token_file, not both"):
        parse_agent_config(
            agent(body='insecure_bootstrap = true\njoin_token = "t"\njoin_token_file = "/t"')
        )
    with pytest.raises(ConfigError, match=re.escape("agent.server_address is required")):
        parse_agent_config(agent().replace('server_address = "s.example.org"', ""))


def test_json_duplicate_keys_and_non_object() -> None:
    with pytest.raises(ConfigError, match='key "server" is given twice'):
        parse_server_config('{"server": {}, "server": {}}')
    with pytest.raises(ConfigError, match="cannot parse configuration"):
        parse_server_config('{"server": ')
    with pytest.raises(ConfigError, match="must be a block"):
        parse_server_config(json.dumps({"server": 5}))


def test_oversize_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        parse_server_config("#" * (1024 * 1024 + 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_is_config_or_config_error(text: str) -> None:
    for parse in (parse_server_config, parse_agent_config):
        with contextlib.suppress(ConfigError):
            parse(text)


HCL_TOKENS = st.sampled_from(
    [
        "server",
        "agent",
        "plugins",
        "{",
        "}",
        "=",
        '"x"',
        '"example.org"',
        "trust_domain",
        "data_dir",
        '"/d"',
        "NodeAttestor",
        '"join_token"',
        "[",
        "]",
        ",",
        "1",
        "true",
        "\n",
        "bind_port",
        "ca_ttl",
        '"1h"',
        "plugin_data",
        "enabled",
        "<<EOF\nx\nEOF\n",
        "#",
        "-1",
        "1.5",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(HCL_TOKENS, max_size=40).map(" ".join))
def test_hcl_shaped_text_is_config_or_config_error(text: str) -> None:
    for parse in (parse_server_config, parse_agent_config):
        with contextlib.suppress(ConfigError):
            parse(text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "server",
                    "agent",
                    "plugins",
                    "trust_domain",
                    "data_dir",
                    "NodeAttestor",
                    "join_token",
                    "plugin_data",
                    "enabled",
                    "bind_port",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_json_structures_are_config_or_config_error(doc: object) -> None:
    text = json.dumps(doc)
    for parse in (parse_server_config, parse_agent_config):
        with contextlib.suppress(ConfigError):
            parse(text)
