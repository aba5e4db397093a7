"""``server { federation {} }`` as SPIRE writes it: bundle endpoint and ``federates_with``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from plastron.errors import ConfigError
from plastron.server.config import ServerConfig, load_server_config, parse_server_config
from plastron.server.main import check_config
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.pki import self_signed


def _parse(federation: str) -> ServerConfig:
    return parse_server_config(
        f"""server {{ trust_domain = "example.org"  data_dir = "/tmp/d"
        federation {{ {federation} }} }}
        plugins {{ NodeAttestor "join_token" {{ plugin_data {{}} }} }}"""
    )


def test_spire_federation_block_is_read() -> None:
    cfg = _parse(
        """
        bundle_endpoint {
          address = "127.0.0.1"
          port = 8443
          refresh_hint = "10m"
          profile "https_web" {
            serving_cert_file { cert_file_path = "c.pem"  key_file_path = "k.pem" }
          }
        }
        federates_with "a.test" {
          bundle_endpoint_url = "https://a.test:8443"
          bundle_endpoint_profile "https_spiffe" {
            endpoint_spiffe_id = "spiffe://a.test/spire/server"
          }
        }
        federates_with "b.test" {
          bundle_endpoint_url = "https://b.test/bundle"
          bundle_endpoint_profile "https_web" {}
        }"""
    ).federation
    ep = cfg.bundle_endpoint
    assert ep is not None and (ep.address, ep.port, ep.profile) == ("127.0.0.1", 8443, "https_web")
    assert ep.refresh_hint == dt.timedelta(minutes=10)
    assert ep.serving_cert_file is not None
    assert ep.serving_cert_file.cert_file_path == Path("c.pem")
    assert ep.serving_cert_file.file_sync_interval == dt.timedelta(minutes=1)
    a, b = cfg.federates_with
    assert a.trust_domain == TrustDomain("a.test") and a.profile == "https_spiffe"
    assert a.endpoint_spiffe_id == SpiffeId.parse("spiffe://a.test/spire/server")
    assert (b.trust_domain, b.profile, b.endpoint_spiffe_id) == (
        TrustDomain("b.test"),
        "https_web",
        None,
    )


def test_bundle_endpoint_defaults_are_spires() -> None:
    ep = _parse("bundle_endpoint {}").federation.bundle_endpoint
    assert ep is not None
    assert (ep.address, ep.port, ep.profile) == ("0.0.0.0", 443, "https_spiffe")
    assert ep.refresh_hint == dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("federation", "message"),
    [
        (
            'bundle_endpoint { profile "https_web" { acme { domain_name = "x" } } }',
            "not supported by Plastron: server.federation.bundle_endpoint.profile.https_web.acme",
        ),
        (
            'bundle_endpoint { profile "https_web" {} }',
            "server.federation.bundle_endpoint.profile.https_web.serving_cert_file is required",
        ),
        ('bundle_endpoint { profile "ftp" {} }', "must be https_web or https_spiffe ('ftp')"),
        (
            'federates_with "a.test" { bundle_endpoint_url = "http://a.test" '
            'bundle_endpoint_profile "https_web" {} }',
            "must use the https scheme",
        ),
        (
            'federates_with "a.test" { bundle_endpoint_url = "https://a.test" '
            'bundle_endpoint_profile "https_spiffe" {} }',
            "endpoint_spiffe_id is required",
        ),
        (
            'federates_with "example.org" { bundle_endpoint_url = "https://a" '
            'bundle_endpoint_profile "https_web" {} }',
            "is the server's own trust domain",
        ),
        ("bundle_endpoint { prot = 1 }", 'unknown key "server.federation.bundle_endpoint.prot"'),
    ],
)
def test_bad_federation_blocks_are_one_clear_error(federation: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _parse(federation)
    assert message in str(refused.value)


def _write_config(tmp_path: Path, cert: str, key: str) -> Path:
    path = tmp_path / "server.conf"
    path.write_text(
        f"""server {{ trust_domain = "example.org"  data_dir = "{tmp_path}/data"
        federation {{ bundle_endpoint {{ profile "https_web" {{
          serving_cert_file {{ cert_file_path = "{cert}"  key_file_path = "{key}" }} }} }} }} }}
        plugins {{ NodeAttestor "join_token" {{ plugin_data {{}} }} }}"""
    )
    return path


def test_validate_loads_the_serving_certificate_from_the_config_directory(tmp_path: Path) -> None:
    self_signed(
        "bundle.example.org", lifetime=dt.timedelta(days=1), backdate=dt.timedelta(0), serial=1
    ).write(tmp_path / "ep.crt", tmp_path / "ep.key")
    good = load_server_config(_write_config(tmp_path, "ep.crt", "ep.key"), expand_env=False)
    check_config(good)  # relative paths: from the config file's directory
    bad = load_server_config(_write_config(tmp_path, "ep.crt", "missing.key"), expand_env=False)
    with pytest.raises(ConfigError, match=r"serving_cert_file: cannot load .*missing\.key"):
        check_config(bad)
