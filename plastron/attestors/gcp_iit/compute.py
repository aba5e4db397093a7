"""The Compute Engine API look-up behind ``use_instance_metadata``: one ``instances.get`` for
the attested instance (tags, labels, metadata), authenticated as a service account.

Plain HTTPS with Google's documented REST shapes: the service account key file
(``"type": "service_account"``) signs an RS256 assertion that its ``token_uri`` exchanges for
an access token (OAuth 2.0 JWT bearer grant, scope ``compute.readonly``), kept until shortly
before it expires; then ``GET {endpoint}projects/{p}/zones/{z}/instances/{name}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from plastron.attestors.cloud_http import HttpResponse, check_secure_url, request
from plastron.attestors.gcp_iit.token import NAME
from plastron.clock import Clock
from plastron.errors import ConfigError, Unavailable
from plastron.strict_json import load_untrusted_object

SCOPE = "https://www.googleapis.com/auth/compute.readonly"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_KEY_FILE_BYTES = 64 * 1024
# renew the access token this long before Google says it expires
TOKEN_MARGIN = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    token_uri: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def load(cls, path: Path, where: str) -> ServiceAccount:
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {str(path)!r}: {exc.strerror}") from None
        doc = load_untrusted_object(
            data, limit=MAX_KEY_FILE_BYTES, what=f"{where} {str(path)!r}", error=ConfigError
        )
        if doc.get("type") != "service_account":
            raise ConfigError(f"{where}: {str(path)!r} is not a service account key file")
        values: dict[str, str] = {}
        for name in ("client_email", "token_uri", "private_key"):
            value = doc.get(name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {str(path)!r} lacks {name}")
            values[name] = value
        try:
            key = serialization.load_pem_private_key(values["private_key"].encode(), None)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: {str(path)!r} private_key is not a PEM key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: {str(path)!r} private_key is not an RSA key")
        kid = doc.get("private_key_id", "")
        return cls(
            client_email=values["client_email"],
            token_uri=check_secure_url(values["token_uri"], f"{where} token_uri"),
            private_key_id=kid if isinstance(kid, str) else "",
            private_key=key,
        )


@dataclass(frozen=True)
class Instance:
    tags: tuple[str, ...]
    labels: dict[str, str]
    metadata: tuple[tuple[str, str | None], ...]


def _api_error(what: str, resp: HttpResponse) -> Unavailable:
    return Unavailable(f"{NAME}: {what} answered HTTP {resp.status}: {resp.excerpt()}")


def _json(resp: HttpResponse, what: str) -> dict[str, Any]:
    return load_untrusted_object(
        resp.body, limit=len(resp.body) + 1, what=f"{NAME}: {what}", error=Unavailable
    )


class ComputeClient:
    def __init__(self, endpoint: str, account: ServiceAccount, clock: Clock) -> None:
        self._endpoint = endpoint
        self._account = account
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._token_until = dt.datetime.min.replace(tzinfo=dt.UTC)

    def __repr__(self) -> str:
        return f"ComputeClient({self._endpoint!r}, account={self._account.client_email!r})"

    async def _access_token(self) -> str:
        async with self._lock:
            now = self._clock.now()
            if self._token is None or now >= self._token_until:
                self._token, lifetime = await self._exchange(now)
                self._token_until = now + max(dt.timedelta(0), lifetime - TOKEN_MARGIN)
            return self._token

    async def _exchange(self, now: dt.datetime) -> tuple[str, dt.timedelta]:
        acct = self._account
        iat = int(now.timestamp())
        claims = {"iss": acct.client_email, "scope": SCOPE, "aud": acct.token_uri,
                  "iat": iat, "exp": iat + 3600}  # fmt: skip
        headers = {"kid": acct.private_key_id} if acct.private_key_id else None
        assertion = jwt.encode(claims, acct.private_key, algorithm="RS256", headers=headers)
        form = urllib.parse.urlencode({"grant_type": GRANT_TYPE, "assertion": assertion})
        what = f"{NAME}: service account token ({acct.token_uri})"
        resp = await request(
            "POST", acct.token_uri, what=what, body=form.encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        if resp.status != 200:
            raise _api_error(f"the token endpoint {acct.token_uri}", resp)
        doc = _json(resp, "token endpoint answer")
        token, expires_in = doc.get("access_token"), doc.get("expires_in", 3600)
        if not isinstance(token, str) or not token:
            raise Unavailable(f"{NAME}: the token endpoint answered without an access_token")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            expires_in = 0
        return token, dt.timedelta(seconds=max(0, min(expires_in, 86400)))

    async def instance(self, project: str, zone: str, name: str) -> Instance:
        p, z, n = (urllib.parse.quote(part, safe="") for part in (project, zone, name))
        url = f"{self._endpoint}projects/{p}/zones/{z}/instances/{n}"
        token = await self._access_token()
        resp = await request(
            "GET", url, what=f"{NAME}: instances.get", headers={"Authorization": f"Bearer {token}"}
        )
        if resp.status != 200:
            raise _api_error(f"instances.get for {project}/{zone}/{name}", resp)
        return parse_instance(_json(resp, "instances.get answer"))


def parse_instance(doc: dict[str, Any]) -> Instance:
    """Tags, labels and metadata items of a Compute Engine ``Instance`` resource; members of
    another shape are ignored as absent."""
    tags_obj = doc.get("tags")
    items = tags_obj.get("items") if isinstance(tags_obj, dict) else None
    tags = tuple(t for t in items if isinstance(t, str)) if isinstance(items, list) else ()
    labels_obj = doc.get("labels")
    labels = (
        {k: v for k, v in labels_obj.items() if isinstance(v, str)}
        if isinstance(labels_obj, dict)
        else {}
    )
    md_obj = doc.get("metadata")
    md_items = md_obj.get("items") if isinstance(md_obj, dict) else None
    metadata: list[tuple[str, str | None]] = []
    for item in md_items if isinstance(md_items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            value = item.get("value")
            metadata.append((item["key"], value if isinstance(value, str) else None))
    return Instance(tags, labels, tuple(metadata))
