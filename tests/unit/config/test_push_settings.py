"""The settings of the entry push and the entry cache's event poll: defaults, values, refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from plastron.agent.config import parse_agent_config
from plastron.errors import ConfigError
from plastron.server.config import parse_server_config

SERVER = """server {{ trust_domain = "example.org" data_dir = "/d" {body} }}
plugins {{ NodeAttestor "join_token" {{}} }}"""
AGENT = """agent {{ trust_domain = "example.org" data_dir = "/d" server_address = "s"
  trust_bundle_path = "/b.pem" {body} }}
plugins {{ NodeAttestor "join_token" {{}} }}"""


def test_defaults_push_and_poll_every_quarter_second() -> None:
    server = parse_server_config(SERVER.format(body=""))
    assert server.experimental.cache_reload_interval == dt.timedelta(milliseconds=250)
    assert parse_agent_config(AGENT.format(body="")).experimental.entry_push is True


def test_values_are_read() -> None:
    body = 'experimental { cache_reload_interval = "2s" }'
    server = parse_server_config(SERVER.format(body=body))
    assert server.experimental.cache_reload_interval == dt.timedelta(seconds=2)
    agent = parse_agent_config(AGENT.format(body="experimental { entry_push = false }"))
    assert agent.experimental.entry_push is False


@pytest.mark.parametrize("value", ["10ms", "6m"])
def test_a_poll_interval_out_of_bounds_is_refused_with_the_bounds(value: str) -> None:
    body = f'experimental {{ cache_reload_interval = "{value}" }}'
    with pytest.raises(ConfigError) as raised:
        parse_server_config(SERVER.format(body=body))
    message = str(raised.value)
    assert "server.experimental.cache_reload_interval" in message
    assert "50ms" in message and "5m" in message


def test_entry_push_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="entry_push"):
        parse_agent_config(AGENT.format(body='experimental { entry_push = "no" }'))


def test_the_server_keepalive_defaults_and_values() -> None:
    default = parse_agent_config(AGENT.format(body="")).experimental
    assert (default.server_keepalive_time, default.server_keepalive_timeout) == (
        dt.timedelta(seconds=30),
        dt.timedelta(seconds=10),
    )
    body = 'experimental { server_keepalive_time = "2m" server_keepalive_timeout = "5s" }'
    agent = parse_agent_config(AGENT.format(body=body)).experimental
    assert (agent.server_keepalive_time, agent.server_keepalive_timeout) == (
        dt.timedelta(minutes=2),
        dt.timedelta(seconds=5),
    )


@pytest.mark.parametrize("key", ["server_keepalive_time", "server_keepalive_timeout"])
@pytest.mark.parametrize("value", ["500ms", "11m"])
def test_a_server_keepalive_out_of_bounds_is_refused_with_the_bounds(key: str, value: str) -> None:
    body = f'experimental {{ {key} = "{value}" }}'
    with pytest.raises(ConfigError) as raised:
        parse_agent_config(AGENT.format(body=body))
    message = str(raised.value)
    assert f"agent.experimental.{key}" in message
    assert "1s" in message and "10m" in message
