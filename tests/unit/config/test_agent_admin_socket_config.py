"""``admin_socket_path`` and ``authorized_delegates`` in the agent config."""

from __future__ import annotations

from pathlib import Path

import pytest

from plastron.agent.config import parse_agent_config
from plastron.errors import ConfigError
from plastron.spiffe.ids import SpiffeId


def _config(extra: str) -> str:
    return f"""
agent {{
  trust_domain = "example.org"
  data_dir = "/srv/plastron-agent"
  server_address = "127.0.0.1"
  insecure_bootstrap = true
  socket_path = "/run/plastron-agent/public/api.sock"
  {extra}
}}
plugins {{ NodeAttestor "join_token" {{ plugin_data {{}} }} }}
"""


def test_not_served_unless_configured() -> None:
    config = parse_agent_config(_config(""))
    assert config.admin_socket_path is None and config.authorized_delegates == ()


def test_admin_socket_and_delegates() -> None:
    config = parse_agent_config(
        _config(
            'admin_socket_path = "/run/plastron-agent/admin/admin.sock"\n'
            'authorized_delegates = ["spiffe://example.org/envoy"]'
        )
    )
    assert config.admin_socket_path == Path("/run/plastron-agent/admin/admin.sock")
    assert config.authorized_delegates == (SpiffeId.parse("spiffe://example.org/envoy"),)


@pytest.mark.parametrize(
    "path",
    ["/run/plastron-agent/public/admin.sock", "/run/plastron-agent/public/sub/admin.sock"],
)
def test_admin_socket_outside_the_public_directory(path: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_agent_config(_config(f'admin_socket_path = "{path}"'))
    assert str(refused.value) == (
        f"agent.admin_socket_path {path} cannot be in the same directory or a subdirectory as"
        " that containing the Workload API socket (/run/plastron-agent/public)"
    )


def test_relative_admin_socket_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be an absolute path"):
        parse_agent_config(_config('admin_socket_path = "admin.sock"'))


def test_a_delegate_must_be_a_spiffe_id() -> None:
    with pytest.raises(ConfigError, match="authorized_delegates"):
        parse_agent_config(_config('authorized_delegates = ["envoy"]'))
