"""The aws_iam payload and the checks made on the signed request before it leaves the server.

The payload is Vault's IAM login shape, JSON with base64 members::

    {"iam_http_request_method": "POST",
     "iam_request_url": b64("https://sts.amazonaws.com/"),
     "iam_request_body": b64("Action=GetCallerIdentity&Version=2011-06-15"),
     "iam_request_headers": b64(JSON {"Host": ["sts.amazonaws.com"], "X-Amz-Date": [...],
                                      "Authorization": [...], "X-Plastron-Server-ID": [...],
                                      ...})}

What the checks establish: the request can only be ``sts:GetCallerIdentity`` (so whatever STS
answers is about the signer, and the server never performs another action with the agent's
credentials); it was signed for a host on the allow list (STS verifies the signature over the
``Host`` header, so a request signed for another endpoint fails there too); the server-ID
header holds this server's ID **and is among the signed headers** (an unsigned header could be
added by whoever replays the request to us); its ``X-Amz-Date`` is within ``max_request_age``.
Only the signed headers and ``Authorization`` are forwarded to STS.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from plastron.attestors.aws_iam.config import NAME, SERVER_ID_HEADER
from plastron.attestors.base import MAX_ATTESTATION_MESSAGE
from plastron.errors import AttestationFailed
from plastron.strict_json import load_untrusted_object

GET_CALLER_IDENTITY = {"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}
MAX_HEADERS = 32
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
AMZ_DATE = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class SignedRequest:
    """A request as the agent signed it; ``headers`` are the signed ones plus Authorization,
    by lower-case name."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(repr=False)
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)
    signed_at: dt.datetime


def _b64(doc: Mapping[str, object], key: str) -> bytes:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise AttestationFailed(f"{NAME}: attestation payload has no {key}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AttestationFailed(f"{NAME}: attestation payload {key} is not base64") from None


def _headers(raw: bytes) -> dict[str, str]:
    doc = load_untrusted_object(
        raw, limit=MAX_ATTESTATION_MESSAGE, what=f"{NAME}: iam_request_headers",
        error=AttestationFailed,
    )  # fmt: skip
    if len(doc) > MAX_HEADERS:
        raise AttestationFailed(f"{NAME}: iam_request_headers has more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for name, value in doc.items():
        values = value if isinstance(value, list) else [value]
        if len(values) != 1 or not isinstance(values[0], str):
            raise AttestationFailed(f"{NAME}: header {name[:60]!r} must have one string value")
        if name.lower() in headers:
            raise AttestationFailed(f"{NAME}: header {name[:60]!r} is repeated")
        if any(c in values[0] for c in "\r\n\0"):
            raise AttestationFailed(f"{NAME}: header {name[:60]!r} holds a line break")
        headers[name.lower()] = values[0]
    return headers


def parse_payload(payload: bytes) -> SignedRequest:
    doc = load_untrusted_object(
        payload, limit=MAX_ATTESTATION_MESSAGE, what=f"{NAME}: attestation payload",
        error=AttestationFailed,
    )  # fmt: skip
    if doc.get("iam_http_request_method") != "POST":
        raise AttestationFailed(f"{NAME}: iam_http_request_method must be POST")
    url = _b64(doc, "iam_request_url").decode("utf-8", "replace")
    body = _b64(doc, "iam_request_body")
    headers = _headers(_b64(doc, "iam_request_headers"))
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if match is None:
        raise AttestationFailed(
            f"{NAME}: the request carries no AWS4-HMAC-SHA256 Authorization header"
        )
    try:
        signed_at = dt.datetime.strptime(headers.get("x-amz-date", ""), AMZ_DATE)
    except ValueError:
        raise AttestationFailed(f"{NAME}: the request has no valid X-Amz-Date header") from None
    signed = tuple(match["signed"].split(";"))
    forwarded = {k: v for k, v in headers.items() if k in signed or k == "authorization"}
    return SignedRequest(
        url=url, body=body, headers=forwarded, signed_headers=signed,
        signature=match["signature"], signed_at=signed_at.replace(tzinfo=dt.UTC),
    )  # fmt: skip


def check_request(
    request: SignedRequest,
    *,
    server_id: str,
    allowed_hosts: frozenset[str],
    now: dt.datetime,
    max_age: dt.timedelta,
) -> None:
    """AttestationFailed naming the first rule ``request`` breaks."""
    for needed in ("host", "x-amz-date", SERVER_ID_HEADER.lower()):
        if needed not in request.signed_headers:
            raise AttestationFailed(
                f"{NAME}: the {needed} header is not among the signed headers "
                f"({';'.join(request.signed_headers)[:200]})"
            )
    got_id = request.headers.get(SERVER_ID_HEADER.lower(), "")
    if got_id != server_id:
        raise AttestationFailed(
            f"{NAME}: the request was signed for server ID {got_id[:100]!r}, not this server's"
        )
    host = request.headers.get("host", "").lower()
    parts = urllib.parse.urlsplit(request.url)
    if host not in allowed_hosts or parts.netloc.lower() != host:
        raise AttestationFailed(
            f"{NAME}: the request was signed for host {host[:100]!r} (URL "
            f"{request.url[:100]!r}); allowed: {', '.join(sorted(allowed_hosts))}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AttestationFailed(f"{NAME}: the request URL {request.url[:100]!r} is not the root")
    form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    if form != GET_CALLER_IDENTITY:
        raise AttestationFailed(
            f"{NAME}: the request body is not exactly Action=GetCallerIdentity&Version=2011-06-15"
        )
    skew = abs(now - request.signed_at)
    if skew > max_age:
        raise AttestationFailed(
            f"{NAME}: the request was signed at {request.signed_at:%Y-%m-%dT%H:%M:%SZ}, more "
            f"than {max_age} from now (expired or not yet valid)"
        )
