"""``plastron-oidc-discovery`` in front of a real ``plastron-server run``: an OIDC relying party
(PyJWT's ``PyJWKClient`` pointed at the discovery document's ``jwks_uri``) verifies JWT-SVIDs
minted by the server, before and after the CA rotator replaces the JWT signing key.

The server runs with ``ca_ttl = "1m"`` (the least it takes), so its rotator prepares the next
JWT key after 30 s and signs with it from 50 s on: the test polls for that, with a deadline.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509

from tests.e2e.conftest import PlastronServerProcess, server_config
from tests.pki import self_signed
from tests.processes import free_port, poll, stop_process

AUDIENCE = "relying-party"
WORKLOAD_ID = "spiffe://example.org/workload"
ROTATION_DEADLINE_SECONDS = 180.0


def write_serving_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (what the relying party connects to)."""
    serving = self_signed("localhost", ca=True, sans=[x509.DNSName("localhost")])
    return serving.write(directory / "oidc-cert.pem", directory / "oidc-key.pem")


@dataclass
class Deployment:
    server: PlastronServerProcess
    provider: subprocess.Popen[bytes]
    base_url: str
    tls: ssl.SSLContext
    log_path: Path

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base_url + path)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, context=self.tls, timeout=10) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def discovery(self) -> dict[str, Any]:
        status, body = self.get("/.well-known/openid-configuration")
        assert status == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def mint(self) -> str:
        out = self.server.run_cli("jwt", "mint", "-spiffeID", WORKLOAD_ID, "-audience", AUDIENCE)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    base = Path(tempfile.mkdtemp(prefix="pl-oidc-", dir="/tmp"))
    socket_path = base / "api.sock"
    config_path = base / "server.conf"
    rotating = 'ca_ttl = "1m"\n  default_jwt_svid_ttl = "10s"\n  default_x509_svid_ttl = "10s"'
    config_path.write_text(server_config(base, free_port(), socket_path, rotating))
    server = PlastronServerProcess(
        base=base,
        config_path=config_path,
        data_dir=base / "data",
        port=0,
        socket_path=str(socket_path),
        log_path=base / "server.log",
    )
    provider: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        cert_path, key_path = write_serving_cert(base)
        port = free_port()
        (base / "oidc.conf").write_text(
            f"""
log_level = "debug"
domains = ["localhost"]
serving_cert_file {{
  cert_file_path = "{cert_path}"
  key_file_path = "{key_path}"
  addr = "127.0.0.1:{port}"
}}
server_api {{
  address = "unix://{socket_path}"
  poll_interval = "1s"
}}
"""
        )
        log_path = base / "oidc.log"
        with open(log_path, "wb") as log:
            provider = subprocess.Popen(
                [sys.executable, "-m", "plastron.oidc.main", "-config", str(base / "oidc.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base,
            )
        tls = ssl.create_default_context(cafile=str(cert_path))
        dep = Deployment(server, provider, f"https://localhost:{port}", tls, log_path)
        poll("the provider serves keys", lambda: dep.get("/keys")[0] == 200)
        yield dep
    finally:
        stop_process(provider)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def relying_party_verifies(client: jwt.PyJWKClient, doc: dict[str, Any], token: str) -> str:
    """What an OIDC relying party does: the key named by ``kid`` from the JWKS, then the
    signature, audience and expiry; the subject is the SPIFFE ID."""
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=doc["id_token_signing_alg_values_supported"],
        audience=AUDIENCE,
        options={"require": ["sub", "aud", "exp"]},
    )
    return str(claims["sub"])


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_relying_party_verifies_jwt_svids_across_a_jwt_key_rotation(
    deployment: Deployment,
) -> None:
    doc = deployment.discovery()
    assert doc["issuer"] == deployment.base_url
    assert doc["jwks_uri"] == deployment.base_url + "/keys"
    client = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=deployment.tls)
    first = deployment.mint()
    assert relying_party_verifies(client, doc, first) == WORKLOAD_ID
    status, body = deployment.get("/keys")
    keys = json.loads(body)["keys"]
    assert status == 200 and keys and all(k["use"] == "sig" for k in keys)

    # The rotator activates the next JWT key; poll until the server signs with it.
    rotated = poll(
        "a JWT-SVID signed by the next JWT key",
        lambda: token if kid_of(token := deployment.mint()) != kid_of(first) else None,
        ROTATION_DEADLINE_SECONDS,
    )
    # The relying party's cached key set lacks the new kid: PyJWKClient refetches the JWKS
    # once, and the provider (polling every second) already has it.
    assert relying_party_verifies(client, doc, rotated) == WORKLOAD_ID
    served = {k["kid"] for k in json.loads(deployment.get("/keys")[1])["keys"]}
    assert {kid_of(first), kid_of(rotated)} <= served


def test_a_host_not_in_domains_is_refused(deployment: Deployment) -> None:
    for path in ("/.well-known/openid-configuration", "/keys"):
        status, body = deployment.get(path, host="attacker.example")
        assert status == 400, body
        assert b'domain "attacker.example" is not allowed' in body.replace(b"'", b'"')
    status, _ = deployment.get("/.well-known/openid-configuration", host="localhost:1")
    assert status == 200
