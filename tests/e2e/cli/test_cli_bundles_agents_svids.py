"""plastron-server bundle/agent/x509/jwt/healthcheck verbs against a real server process."""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plastron.errors import InvalidSvid
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid

TD = TrustDomain("example.org")


def _ok(result: Any) -> str:
    assert result.returncode == 0, f"rc={result.returncode} stderr={result.stderr!r}"
    return str(result.stdout)


def _one_error_line(result: Any) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _foreign_ca(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=1))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{name}")]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def test_bundle_show_pem_spiffe_and_json_agree(plastron_server: Any) -> None:
    pem_certs = x509.load_pem_x509_certificates(
        _ok(plastron_server.run_cli("bundle", "show")).encode()
    )
    assert pem_certs
    jwks = _ok(plastron_server.run_cli("bundle", "show", "-format", "spiffe"))
    bundle = Bundle.from_jwks(TD, jwks.encode())
    assert bundle.x509_certificates() == pem_certs
    assert bundle.jwt_keys(), "the server bundle must carry its JWT key"
    doc = json.loads(_ok(plastron_server.run_cli("bundle", "show", "-output", "json")))
    assert doc["trust_domain"] == "example.org"
    ders = [base64.b64decode(a["asn1"]) for a in doc["x509_authorities"]]
    assert ders == [c.public_bytes(serialization.Encoding.DER) for c in pem_certs]
    assert _ok(plastron_server.run_cli("bundle", "count")) == "1 bundle\n"
    bad = plastron_server.run_cli("bundle", "show", "-format", "der")
    assert "-format" in _one_error_line(bad)


def test_federated_bundle_set_list_delete(plastron_server: Any, tmp_path: Path) -> None:
    run = plastron_server.run_cli
    other = _foreign_ca("other.org")
    pem_path = tmp_path / "other.pem"
    pem_path.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    assert (
        _ok(run("bundle", "set", "-id", "spiffe://other.org", "-path", str(pem_path)))
        == "bundle set.\n"
    )

    listed = _ok(run("bundle", "list"))
    assert listed.startswith("****************************************\n* other.org\n")
    assert x509.load_pem_x509_certificates(listed.split("*\n", 3)[-1].encode()) == [other]
    one = _ok(run("bundle", "list", "-id", "spiffe://other.org", "-format", "spiffe"))
    assert Bundle.from_jwks(TrustDomain("other.org"), one.encode()).x509_certificates() == [other]

    # SPIFFE format from stdin, for a second trust domain.
    third = _ok(run("bundle", "show", "-format", "spiffe")).replace("example.org", "x")
    assert _ok(
        run("bundle", "set", "-id", "spiffe://third.org", "-format", "spiffe", input=third.encode())
    )
    assert _ok(run("bundle", "count")) == "3 bundles\n"

    # An entry federating with other.org makes RESTRICT refuse; DISSOCIATE succeeds.
    _ok(run("entry", "create", "-spiffeID", "spiffe://example.org/f", "-parentID",
            "spiffe://example.org/h", "-selector", "a:b",
            "-federatesWith", "spiffe://other.org"))  # fmt: skip
    refused = _one_error_line(run("bundle", "delete", "-id", "spiffe://other.org"))
    assert refused.startswith('Error: failed to delete federated bundle "other.org"')
    assert (
        _ok(run("bundle", "delete", "-id", "spiffe://other.org", "-mode", "dissociate"))
        == "bundle deleted.\n"
    )
    assert _ok(run("bundle", "delete", "-id", "third.org")) == "bundle deleted.\n"
    assert _ok(run("bundle", "count")) == "1 bundle\n"
    assert "NotFound" in _one_error_line(run("bundle", "delete", "-id", "spiffe://other.org"))

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert "unable to parse" in _one_error_line(
        run("bundle", "set", "-id", "spiffe://other.org", "-path", str(garbage))
    )
    assert "id flag is required" in _one_error_line(run("bundle", "set", "-path", str(pem_path)))
    own = _one_error_line(
        run("bundle", "set", "-id", "spiffe://example.org", "-path", str(pem_path))
    )
    assert "InvalidArgument" in own or "own" in own
    assert _ok(run("bundle", "count")) == "1 bundle\n"


def test_agent_list_show_ban_evict(plastron_server: Any) -> None:
    run = plastron_server.run_cli
    assert _ok(run("agent", "list")) == "No attested agents found\n"
    token = json.loads(_ok(run("token", "generate", "-output", "json")))["value"]
    agent = plastron_server.attest_join_token(token)
    agent_id = str(agent.spiffe_id)
    assert agent_id == f"spiffe://example.org/spire/agent/join_token/{token}"

    listed = _ok(run("agent", "list"))
    assert listed.startswith("Found 1 attested agent:\n\n")
    assert f"SPIFFE ID         : {agent_id}\n" in listed
    assert "Attestation type  : join_token\n" in listed
    # SPIRE keeps the agent SVID serial as a decimal string.
    assert f"Serial number     : {agent.chain[0].serial_number}\n" in listed
    assert _ok(run("agent", "count")) == "1 attested agent\n"
    assert _ok(run("agent", "count", "-attestationType", "x509pop")) == "0 attested agents\n"
    assert _ok(run("agent", "count", "-banned", "false")) == "1 attested agent\n"
    shown = _ok(run("agent", "show", "-spiffeID", agent_id))
    assert shown.startswith("Found an attested agent given its SPIFFE ID\n\n")
    doc = json.loads(_ok(run("agent", "show", "-spiffeID", agent_id, "-output", "json")))
    assert doc["attestation_type"] == "join_token"
    assert doc["banned"] is False

    assert _ok(run("agent", "ban", "-spiffeID", agent_id)) == "Agent banned successfully\n"
    assert "Banned            : true\n" in _ok(run("agent", "show", "-spiffeID", agent_id))
    assert _ok(run("agent", "count", "-banned", "true")) == "1 attested agent\n"
    assert _ok(run("agent", "evict", "-spiffeID", agent_id)) == "Agent evicted successfully\n"
    assert _ok(run("agent", "list")) == "No attested agents found\n"
    assert "NotFound" in _one_error_line(run("agent", "show", "-spiffeID", agent_id))
    assert "NotFound" in _one_error_line(run("agent", "evict", "-spiffeID", agent_id))
    assert "SPIFFE ID is required" in _one_error_line(run("agent", "ban"))


def test_x509_mint_verifies_against_bundle(plastron_server: Any, tmp_path: Path) -> None:
    out = _ok(plastron_server.run_cli(
        "x509", "mint", "-spiffeID", "spiffe://example.org/minted", "-dns", "m.example.org",
        "-ttl", "10m", "-write", str(tmp_path)))  # fmt: skip
    assert f"X509-SVID written to {tmp_path}/svid.pem" in out
    chain = x509.load_pem_x509_certificates((tmp_path / "svid.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), None)
    roots = x509.load_pem_x509_certificates((tmp_path / "bundle.pem").read_bytes())
    assert stat.S_IMODE(os.stat(tmp_path / "key.pem").st_mode) == 0o600
    assert roots == plastron_server.bundle_certificates()
    assert validate_x509_svid(chain, roots, _now()) == SpiffeId.parse("spiffe://example.org/minted")
    assert key.public_key() == chain[0].public_key()
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["m.example.org"]
    lifetime = chain[0].not_valid_after_utc - _now()
    assert _dt.timedelta(minutes=8) < lifetime <= _dt.timedelta(minutes=10, seconds=1)
    with pytest.raises(InvalidSvid):
        validate_x509_svid(chain, [_foreign_ca("example.org")], _now())

    pretty = _ok(plastron_server.run_cli("x509", "mint", "-spiffeID", "spiffe://example.org/p"))
    assert pretty.startswith("X509-SVID:\n-----BEGIN CERTIFICATE-----")
    assert "Private key:\n-----BEGIN PRIVATE KEY-----" in pretty
    assert "spiffeID must be specified" in _one_error_line(plastron_server.run_cli("x509", "mint"))
    reserved = plastron_server.run_cli("x509", "mint", "-spiffeID", "spiffe://other.org/x")
    assert "unable to mint SVID" in _one_error_line(reserved)


def test_jwt_mint_validates_with_bundle_keys(plastron_server: Any, tmp_path: Path) -> None:
    token = _ok(plastron_server.run_cli(
        "jwt", "mint", "-spiffeID", "spiffe://example.org/j", "-audience", "db",
        "-audience", "cache", "-ttl", "5m")).strip()  # fmt: skip
    jwks = _ok(plastron_server.run_cli("bundle", "show", "-format", "spiffe"))
    keys = Bundle.from_jwks(TD, jwks.encode()).jwt_keys()
    svid = validate_jwt_svid(token, audience=["db", "cache"], authorities=keys, now=_now())
    assert str(svid.spiffe_id) == "spiffe://example.org/j"
    with pytest.raises(InvalidSvid):
        validate_jwt_svid(token, audience="other", authorities=keys, now=_now())
    with pytest.raises(InvalidSvid):
        validate_jwt_svid(
            token, audience="db", authorities=keys, now=_now() + _dt.timedelta(hours=1)
        )

    path = tmp_path / "token.jwt"
    out = _ok(plastron_server.run_cli(
        "jwt", "mint", "-spiffeID", "spiffe://example.org/j", "-audience", "db",
        "-write", str(path)))  # fmt: skip
    assert out == f"JWT-SVID written to {path}\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    validate_jwt_svid(path.read_text(), audience="db", authorities=keys, now=_now())
    no_aud = plastron_server.run_cli("jwt", "mint", "-spiffeID", "spiffe://example.org/j")
    assert "audience" in _one_error_line(no_aud)


def test_healthcheck_and_unreachable_socket(plastron_server: Any, tmp_path: Path) -> None:
    assert _ok(plastron_server.run_cli("healthcheck")) == "Server is healthy.\n"
    missing = str(tmp_path / "missing.sock")
    sick = plastron_server.run_cli("healthcheck", "-socketPath", missing)
    assert sick.returncode == 1
    assert sick.stderr == "Server is unhealthy: unable to determine health\n"
    down = plastron_server.run_cli("entry", "show", "-socketPath", missing)
    line = _one_error_line(down)
    assert "connection error" in line and missing in line and "is the server running?" in line
    assert "unknown command" in _one_error_line(plastron_server.run_cli("entry", "frobnicate"))


def test_agent_list_expires_before_uses_spire_wire_format(plastron_server: Any) -> None:
    token = json.loads(_ok(plastron_server.run_cli("token", "generate", "-output", "json")))
    plastron_server.attest_join_token(token["value"])
    assert _ok(plastron_server.run_cli("agent", "count", "-expiresBefore", "2000-01-01")) == (
        "0 attested agents\n"
    )
    listed = _ok(plastron_server.run_cli("agent", "list", "-expiresBefore", "2999-01-01"))
    assert listed.startswith("Found 1 attested agent:")
