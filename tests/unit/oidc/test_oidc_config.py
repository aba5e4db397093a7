"""``plastron-oidc-discovery`` config: SPIRE's provider configs are read as they are; what
cannot be served is refused with one line naming the key."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from plastron.errors import ConfigError
from plastron.oidc.config import ServerApiSource, WorkloadApiSource, parse_oidc_config

SPIRE_SERVER_API = """
log_level = "debug"
domains = ["mypublicdomain.test"]
serving_cert_file {
 cert_file_path = "/some/path/on/disk/to/cert.pem"
 key_file_path = "/some/path/on/disk/to/key.pem"
}
server_api {
    address = "unix:///tmp/spire-server/private/api.sock"
}
"""

SPIRE_WORKLOAD_API_SOCKET = """
log_level = "debug"
domains = ["mypublicdomain.test"]
listen_socket_path = "/run/oidc-discovery-provider/server.sock"

workload_api {
    socket_path = "/tmp/spire-agent/private/api.sock"
    trust_domain = "domain.test"
}
health_checks {}
"""


def test_spire_readme_examples_parse() -> None:
    config = parse_oidc_config(SPIRE_SERVER_API)
    assert config.source == ServerApiSource(
        Path("/tmp/spire-server/private/api.sock"), dt.timedelta(seconds=10)
    )
    assert config.serving_cert is not None and config.serving_cert.port == 443
    assert config.log_level == "DEBUG"
    config = parse_oidc_config(SPIRE_WORKLOAD_API_SOCKET)
    assert isinstance(config.source, WorkloadApiSource)
    assert config.source.trust_domain.name == "domain.test"
    assert config.listen_socket_path == Path("/run/oidc-discovery-provider/server.sock")
    assert config.health_checks is not None and config.health_checks.bind_port == 8008


def test_issuer_jwks_uri_insecure_addr_and_prefix() -> None:
    config = parse_oidc_config(
        """
domains = ["oidc.example.org"]
insecure_addr = ":8080"
allow_insecure_scheme = true
set_key_use = true
jwt_issuer = "https://issuer.example.org"
jwks_uri = "https://oidc.example.org/keys"
server_path_prefix = "/td"
server_api { address = "unix:///run/server.sock", poll_interval = "2s" }
"""
    )
    assert config.insecure_addr == ("0.0.0.0", 8080)
    assert config.jwt_issuer == "https://issuer.example.org"
    assert config.server_path_prefix == "/td/"
    assert config.health_threshold == dt.timedelta(minutes=3)


BASE_SOURCE = 'server_api { address = "unix:///run/s.sock" }'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'domains = ["a.test"]\nacme {{ email = "x@a.test"\ntos_accepted = true }}\n'
            f"{BASE_SOURCE}",
            "acme is not supported",
        ),
        (f'domains = ["a.test"]\n{BASE_SOURCE}', "exactly one of serving_cert_file"),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":80"\nlisten_socket_path = "/s"\n'
            f"{BASE_SOURCE}",
            "exactly one of serving_cert_file",
        ),
        (f'insecure_addr = ":80"\n{BASE_SOURCE}', "domains must be configured"),
        (f'domains = ["bücher.test"]\ninsecure_addr = ":80"\n{BASE_SOURCE}', "punycode"),
        ('domains = ["a.test"]\ninsecure_addr = ":80"', "exactly one of the server_api"),
        (
            'domains = ["a.test"]\ninsecure_addr = ":80"\n'
            'server_api { address = "127.0.0.1:8081" }',
            'server_api.address must be "unix:///',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":80"\nregistration_api { socket_path = "/s" }',
            "registration_api was replaced by server_api",
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":80"\nlog_levl = "debug"\n{BASE_SOURCE}',
            'unknown key "log_levl"',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":80"\n'
            'server_api { address = "unix:///s"\nexperimental { named_pipe_name = "x" } }',
            "server_api.experimental",
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":80"\nworkload_api { socket_path = "/s" }',
            "workload_api.trust_domain is required",
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":80"\njwt_issuer = "issuer"\n{BASE_SOURCE}',
            "jwt_issuer must be an http(s) URL",
        ),
    ],
)
def test_refusals_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_oidc_config(text)
    assert message in str(info.value)


def test_cli_prints_one_error_line(tmp_path: Path) -> None:
    conf = tmp_path / "oidc.conf"
    conf.write_text('domains = ["a.test"]\nacme { email = "x" }\n' + BASE_SOURCE)
    out = subprocess.run(
        [sys.executable, "-m", "plastron.oidc.main", "-config", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("Error: acme is not supported")
