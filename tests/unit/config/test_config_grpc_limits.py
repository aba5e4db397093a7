"""The grpc_limits block (server and agent): defaults, values, strict keys and ranges."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from plastron.agent.config import parse_agent_config
from plastron.errors import ConfigError
from plastron.server.config import parse_server_config
from plastron.transport.limits import ConnectionLimits

NA = 'NodeAttestor "join_token" {}'


def server(body: str) -> str:
    return (
        f'server {{\n trust_domain = "example.org"\n data_dir = "/d"\n{body}\n}}\n'
        f"plugins {{ {NA} }}"
    )


def agent(body: str) -> str:
    return (
        f'agent {{\n trust_domain = "example.org"\n data_dir = "/d"\n server_address = "s"\n'
        f' trust_bundle_path = "/b.pem"\n{body}\n}}\nplugins {{ {NA} }}'
    )


BLOCK = """grpc_limits {
  max_concurrent_streams   = 20
  max_connections_per_peer = 50000
  first_message_timeout    = "30s"
}"""


def test_defaults_hold_a_large_fleet() -> None:
    limits = parse_server_config(server("")).grpc_limits
    assert limits == ConnectionLimits()
    assert limits.max_concurrent_streams == 100
    assert limits.max_connections_per_peer == 1000
    assert limits.first_message_timeout == dt.timedelta(seconds=10)
    assert parse_agent_config(agent("")).grpc_limits == ConnectionLimits()


def test_values_are_read() -> None:
    expected = ConnectionLimits(20, 50000, dt.timedelta(seconds=30))
    assert parse_server_config(server(BLOCK)).grpc_limits == expected
    assert parse_agent_config(agent(BLOCK)).grpc_limits == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("grpc_limits { max_streams = 5 }", 'unknown key "server.grpc_limits.max_streams"'),
        (
            "grpc_limits { max_concurrent_streams = 0 }",
            "server.grpc_limits.max_concurrent_streams must be between 1 and 2147483647 (0)",
        ),
        (
            'grpc_limits { max_connections_per_peer = "many" }',
            "server.grpc_limits.max_connections_per_peer must be an integer",
        ),
        (
            'grpc_limits { first_message_timeout = "0s" }',
            "server.grpc_limits.first_message_timeout must be longer than zero",
        ),
    ],
)
def test_bad_values_are_refused_with_their_path(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_server_config(server(body))
