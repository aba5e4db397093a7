"""The discovery document and JWKS as SPIRE's provider serves them: issuer and jwks_uri from
the request's host (or the configured values), the Host allow-list, methods and paths."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import ManualClock
from plastron.errors import ConfigError, InvalidArgument
from plastron.oidc.http import DocumentHandler, Request, parse_head
from plastron.spiffe.bundle import Bundle, JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.oidc import DomainAllowList

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def bundle() -> Bundle:
    return Bundle(
        TrustDomain("example.org"),
        jwt_authorities=(
            JwtAuthority("ec", ec.generate_private_key(ec.SECP256R1()).public_key()),
            JwtAuthority(
                "rsa",
                rsa.generate_private_key(65537, 2048).public_key(),
                NOW + dt.timedelta(hours=1),
                tainted=True,
            ),
            JwtAuthority(
                "expired",
                ec.generate_private_key(ec.SECP384R1()).public_key(),
                NOW - dt.timedelta(seconds=1),
            ),
        ),
    )


def handler(**kwargs: Any) -> DocumentHandler:
    options: dict[str, Any] = {
        "domains": DomainAllowList(["oidc.example.org"]),
        "bundle": bundle,
        "clock": ManualClock(NOW),
        "allow_insecure_scheme": False,
        "jwt_issuer": None,
        "jwks_uri": None,
    }
    options.update(kwargs)
    return DocumentHandler(**options)


def get(h: DocumentHandler, path: str, tls: bool = True, **headers: str) -> tuple[int, Any]:
    names = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    names.setdefault("host", "oidc.example.org")
    response = h.handle(Request("GET", path, names, tls))
    body = response.body.decode()
    return response.status, json.loads(body) if response.status == 200 else body


def test_discovery_document_from_the_host() -> None:
    status, doc = get(handler(), "/.well-known/openid-configuration", host="OIDC.example.org:443")
    assert status == 200
    assert doc["issuer"] == "https://OIDC.example.org:443"
    assert doc["jwks_uri"] == "https://OIDC.example.org:443/keys"
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "ES384"]


def test_configured_issuer_prefix_and_insecure_scheme() -> None:
    h = handler(jwt_issuer="https://issuer.example.org", path_prefix="/td/")
    status, doc = get(h, "/td/.well-known/openid-configuration")
    assert status == 200
    assert doc["issuer"] == "https://issuer.example.org"
    assert doc["jwks_uri"] == "https://oidc.example.org/td/keys"
    h = handler(allow_insecure_scheme=True)
    assert get(h, "/.well-known/openid-configuration", tls=False)[1]["issuer"].startswith("http://")
    forwarded = get(h, "/.well-known/openid-configuration", tls=False, x_forwarded_proto="https")
    assert forwarded[1]["issuer"] == "https://oidc.example.org"


def test_jwks_keys_carry_kid_alg_use_and_leave_out_expired() -> None:
    status, doc = get(handler(), "/keys")
    assert status == 200
    by_kid = {k["kid"]: k for k in doc["keys"]}
    assert set(by_kid) == {"ec", "rsa"}
    assert by_kid["ec"]["alg"] == "ES256" and by_kid["rsa"]["alg"] == "RS256"
    assert all(k["use"] == "sig" for k in doc["keys"])


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "oidc.example.org.attacker.example", "", "[::1]:443", "a b"],
)
def test_hosts_outside_the_allow_list_are_refused(host: str) -> None:
    for path in ("/keys", "/.well-known/openid-configuration"):
        status, body = get(handler(), path, host=host)
        assert status == 400 and "domain" in body


def test_forwarded_host_is_checked_too() -> None:
    status, _ = get(handler(), "/keys", x_forwarded_host="attacker.example")
    assert status == 400


def test_methods_paths_and_missing_keys() -> None:
    h = handler()
    assert h.handle(Request("POST", "/keys", {"host": "oidc.example.org"}, True)).status == 405
    assert get(h, "/other")[0] == 404
    assert get(handler(bundle=lambda: None), "/keys")[0] == 500


def test_domains_config_refusals() -> None:
    with pytest.raises(ConfigError, match="domains must be configured"):
        DomainAllowList([])
    with pytest.raises(ConfigError, match="not a valid domain name"):
        DomainAllowList(["bad_domain.test"])


def test_malformed_request_heads() -> None:
    for head in (b"GET /keys", b"GET /keys HTTP/1.1\r\nbad header", b"GET  /keys HTTP/1.1"):
        with pytest.raises(InvalidArgument, match="malformed"):
            parse_head(head, False)
    assert parse_head(b"GET /keys?x=1 HTTP/1.1\r\nHost: a", False).path == "/keys"
