"""Sending the agent's signed ``GetCallerIdentity`` to the configured STS endpoint, and what STS
says about the signer.

The request goes to the server's ``sts_endpoint``, never to a URL from the payload (the payload
only proves which host it was signed for). A 4xx answer is STS refusing the signature or the
credentials (``SignatureDoesNotMatch``, ``ExpiredToken``, ``InvalidClientTokenId``): the
attestation fails with STS's code and message. Anything else that is not a 200 is STS being
unavailable. The XML answer is bounded and refused if it declares a DTD (no entity expansion).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from plastron.attestors.aws_iam.config import NAME
from plastron.attestors.aws_iam.wire import SignedRequest
from plastron.attestors.cloud_http import HttpResponse, request
from plastron.errors import AttestationFailed, Unavailable

MAX_ANSWER_BYTES = 64 * 1024
_ROLE_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):(?:sts::(?P<acct1>\d{12}):assumed-role/(?P<role1>[^/]+)/[^/]+"
    r"|iam::(?P<acct2>\d{12}):role/(?:[^/]+/)*(?P<role2>[^/]+))"
)


@dataclass(frozen=True)
class CallerIdentity:
    account: str
    arn: str
    user_id: str
    role: str


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_xml(body: bytes, what: str) -> ET.Element:
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise Unavailable(f"{what}: the answer declares a DTD, which is refused")
    try:
        # bounded, DTD-free XML from the configured endpoint (checked above)
        return ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        raise Unavailable(f"{what}: the answer is not XML") from None


def _find(root: ET.Element, name: str) -> str:
    for element in root.iter():
        if _local(element.tag) == name and element.text:
            return element.text.strip()
    return ""


def _refusal(resp: HttpResponse, what: str) -> AttestationFailed:
    code = message = ""
    try:
        root = _parse_xml(resp.body, what)
        code, message = _find(root, "Code"), _find(root, "Message")
    except Unavailable:
        pass
    detail = f"{code}: {message}" if code else resp.excerpt()
    return AttestationFailed(f"{what} refused the request (HTTP {resp.status}): {detail[:300]}")


def parse_identity(body: bytes, what: str) -> CallerIdentity:
    root = _parse_xml(body, what)
    if _local(root.tag) != "GetCallerIdentityResponse":
        raise Unavailable(f"{what}: the answer is not a GetCallerIdentityResponse")
    arn, account, user_id = _find(root, "Arn"), _find(root, "Account"), _find(root, "UserId")
    match = _ROLE_ARN.fullmatch(arn)
    if match is None:
        raise AttestationFailed(
            f"{NAME}: the caller {arn[:200]!r} is not an IAM role; only roles attest"
        )
    if (match["acct1"] or match["acct2"]) != account or not user_id:
        raise Unavailable(f"{what}: the answer's Account and Arn disagree or UserId is missing")
    return CallerIdentity(account, arn, user_id, match["role1"] or match["role2"])


async def get_caller_identity(endpoint: str, signed: SignedRequest) -> CallerIdentity:
    what = f"{NAME}: STS {endpoint}"
    resp = await request(
        "POST", endpoint + "/", what=what, headers=signed.headers, body=signed.body,
        max_bytes=MAX_ANSWER_BYTES,
    )  # fmt: skip
    if 400 <= resp.status < 500:
        raise _refusal(resp, what)
    if resp.status != 200:
        raise Unavailable(f"{what} answered HTTP {resp.status}: {resp.excerpt()}")
    return parse_identity(resp.body, what)
