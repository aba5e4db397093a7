"""The Azure Instance Metadata Service (IMDS): a managed identity's access token for a
resource, and the VM's own subscription. Used by the agent half (the attestation token) and by
the server half when it runs on an Azure VM and a tenant has no app credentials."""

from __future__ import annotations

import urllib.parse
from typing import Any

from plastron.attestors.azure_msi.token import NAME
from plastron.attestors.cloud_http import HttpResponse, request
from plastron.errors import Unavailable
from plastron.strict_json import load_untrusted_object

TOKEN_PATH = "/metadata/identity/oauth2/token"  # noqa: S105 - a URL path, not a secret
INSTANCE_PATH = "/metadata/instance"
MAX_ANSWER_BYTES = 64 * 1024


async def _get(url: str, what: str) -> dict[str, Any]:
    # never through a proxy: IMDS answers on the VM's link-local address only
    resp: HttpResponse = await request(
        "GET", url, what=what, headers={"Metadata": "true"}, max_bytes=MAX_ANSWER_BYTES,
        use_proxy=False,
    )  # fmt: skip
    if resp.status != 200:
        raise Unavailable(f"{what}: {url} answered HTTP {resp.status}: {resp.excerpt()}")
    return load_untrusted_object(
        resp.body, limit=MAX_ANSWER_BYTES, what=f"{what}: the answer", error=Unavailable
    )


async def managed_identity_token(endpoint: str, resource: str, *, what: str) -> tuple[str, int]:
    """The access token for ``resource`` and its lifetime in seconds (0 if not stated)."""
    query = urllib.parse.urlencode({"api-version": "2018-02-01", "resource": resource})
    doc = await _get(f"{endpoint}{TOKEN_PATH}?{query}", what)
    token = doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unavailable(f"{what}: the answer has no access_token")
    expires_in = doc.get("expires_in", "0")  # IMDS gives it as a string of digits
    seconds = int(expires_in) if isinstance(expires_in, str) and expires_in.isdigit() else 0
    return token, min(seconds, 86400)


async def own_subscription(endpoint: str) -> str:
    """The subscription of the VM this process runs on."""
    what = f"{NAME}: the server's instance metadata"
    doc = await _get(f"{endpoint}{INSTANCE_PATH}?api-version=2021-02-01&format=json", what)
    compute = doc.get("compute")
    sub = compute.get("subscriptionId") if isinstance(compute, dict) else None
    if not isinstance(sub, str) or not sub:
        raise Unavailable(f"{what}: the answer has no compute.subscriptionId")
    return sub
