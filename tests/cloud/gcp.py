"""A fake Google on loopback for gcp_iit: the metadata server's identity endpoint (tokens signed
with a test key for the instance the test chose), the JWKS URL, the OAuth token endpoint of a
test service account, and Compute Engine ``instances.get``."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from tests.cloud.fake_http import FakeHttp, Reply, Seen
from tests.cloud.tokens import Issuer, rsa_key

IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
JWKS_PATH = "/oauth2/v3/certs"
TOKEN_PATH = "/token"
COMPUTE_ROOT = "/compute/v1/"
AUDIENCE = "spire-gcp-node-attestor"
SA_EMAIL = "node-sa@proj-a.iam.gserviceaccount.com"
API_TOKEN = "ya29.test-access-token"


def gcp_claims(
    instance_id: str,
    *,
    project: str = "proj-a",
    audience: str = AUDIENCE,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=1),
    name: str | None = None,
    **override: Any,
) -> dict[str, Any]:
    iat = int((now or dt.datetime.now(dt.UTC)).timestamp())
    claims: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": SA_EMAIL,
        "email_verified": True,
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "google": {
            "compute_engine": {
                "project_id": project,
                "project_number": 739419398126,
                "zone": "us-west1-b",
                "instance_id": instance_id,
                "instance_name": name or f"vm-{instance_id}",
                "instance_creation_timestamp": 1700000000,
            }
        },
    }
    claims.update(override)
    return claims


@dataclass
class FakeGoogle:
    """One loopback server playing the metadata server, Google's JWKS, OAuth and Compute."""

    issuer: Issuer = field(default_factory=lambda: Issuer.make(11, 12))
    http: FakeHttp = field(default_factory=FakeHttp)
    instance: dict[str, Any] = field(default_factory=dict)  # claims overrides per token
    tags: list[str] = field(default_factory=lambda: ["web", "prod"])
    labels: dict[str, str] = field(default_factory=lambda: {"team": "blue", "secret": "x"})
    metadata: list[dict[str, Any]] = field(
        default_factory=lambda: [{"key": "role", "value": "frontend"}, {"key": "empty"}]
    )

    def __enter__(self) -> FakeGoogle:
        self.http.__enter__()
        self.http.route("GET", IDENTITY_PATH, self._identity)
        self.http.route(
            "GET", JWKS_PATH, Reply(200, self.issuer.jwks(), {"Cache-Control": "max-age=3600"})
        )
        self.http.route("POST", TOKEN_PATH, self._token)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    @property
    def host(self) -> str:
        return self.http.host

    def url(self, path: str) -> str:
        return self.http.url(path)

    def _identity(self, seen: Seen) -> Reply:
        if seen.headers.get("metadata-flavor") != "Google":
            return Reply(403, "Missing Metadata-Flavor:Google header")
        if seen.query.get("format") != ["full"]:
            return Reply(400, "test fake serves format=full only")
        audience = seen.query["audience"][0]
        claims = gcp_claims(self.instance.get("instance_id", "1001"), audience=audience)
        for key, value in self.instance.items():
            if key in claims["google"]["compute_engine"]:
                claims["google"]["compute_engine"][key] = value
        return Reply(200, self.issuer.sign(claims))

    def _token(self, seen: Seen) -> Reply:
        form = urllib.parse.parse_qs(seen.body.decode())
        assertion = form["assertion"][0]
        public = rsa_key(21).public_key()
        try:
            claims = jwt.decode(
                assertion, public, algorithms=["RS256"], audience=self.url(TOKEN_PATH)
            )
        except jwt.PyJWTError as exc:
            return Reply(400, json.dumps({"error": "invalid_grant", "detail": str(exc)}))
        if claims.get("iss") != SA_EMAIL or "compute" not in claims.get("scope", ""):
            return Reply(400, json.dumps({"error": "invalid_scope"}))
        return Reply(200, json.dumps({"access_token": API_TOKEN, "expires_in": 3599}))

    def serve_instance(self, project: str, zone: str, name: str) -> None:
        path = f"{COMPUTE_ROOT}projects/{project}/zones/{zone}/instances/{name}"

        def answer(seen: Seen) -> Reply:
            if seen.headers.get("authorization") != f"Bearer {API_TOKEN}":
                return Reply(401, json.dumps({"error": {"code": 401}}))
            doc = {
                "name": name,
                "tags": {"items": self.tags},
                "labels": self.labels,
                "metadata": {"items": self.metadata},
            }
            return Reply(200, json.dumps(doc))

        self.http.route("GET", path, answer)

    def write_service_account(self, path: Path) -> Path:
        pem = (
            rsa_key(21)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        doc: Mapping[str, Any] = {
            "type": "service_account",
            "project_id": "proj-a",
            "private_key_id": "sa-key-1",
            "private_key": pem,
            "client_email": SA_EMAIL,
            "token_uri": self.url(TOKEN_PATH),
        }
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
        return path
