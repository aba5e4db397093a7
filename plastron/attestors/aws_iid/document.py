"""The EC2 instance identity document: strict parsing of its JSON and the claims it carries.

The fields that name the node (``accountId``, ``region``, ``instanceId``) are checked against
the shapes AWS gives them, since they pick the certificate and build the agent ID; the others
are strings or null. Unknown fields are kept in ``claims`` (AWS adds fields over time).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from plastron.errors import AttestationFailed
from plastron.strict_json import load_untrusted_object

NAME = "aws_iid"
MAX_DOCUMENT_BYTES = 16 * 1024
_ACCOUNT = re.compile(r"[0-9]{12}")
_INSTANCE = re.compile(r"i-[0-9a-f]{8,32}")
_REGION = re.compile(r"[a-z]{2,8}(-[a-z0-9]{1,16}){1,4}")
_TEXT_FIELDS = (
    "availabilityZone", "imageId", "instanceType", "architecture", "privateIp", "version",
    "kernelId", "ramdiskId",
)  # fmt: skip


@dataclass(frozen=True)
class IdentityDocument:
    """The claims of a verified instance identity document."""

    account_id: str
    region: str
    instance_id: str
    availability_zone: str
    image_id: str
    pending_time: dt.datetime
    instance_type: str = ""
    architecture: str = ""
    private_ip: str = ""
    version: str = ""
    # every field of the document, as parsed
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    # which signatures were verified: "rsa2048", "signature", "pkcs7"
    verified_by: tuple[str, ...] = ()


def _error(message: str) -> AttestationFailed:
    return AttestationFailed(f"{NAME}: {message}")


def _text(claims: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = claims.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _error(f"instance identity document field {key!r} must be a non-empty string")
    if len(value) > 256:
        raise _error(f"instance identity document field {key!r} is longer than 256 characters")
    return value


def _shaped(claims: Mapping[str, Any], key: str, shape: re.Pattern[str]) -> str:
    value = _text(claims, key, required=True)
    if not shape.fullmatch(value):
        raise _error(f"instance identity document {key} {value[:64]!r} is not an AWS {key}")
    return value


def parse_pending_time(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _error("instance identity document pendingTime must be a string")
    try:
        parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise _error(
            f"instance identity document pendingTime {value[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    return parsed.replace(tzinfo=dt.UTC)


def parse_document(document: bytes, verified_by: tuple[str, ...] = ()) -> IdentityDocument:
    """The document's claims; AttestationFailed naming the field that is malformed."""
    claims = load_untrusted_object(
        document,
        limit=MAX_DOCUMENT_BYTES,
        what=f"{NAME}: instance identity document",
        error=AttestationFailed,
    )
    for key in _TEXT_FIELDS:
        _text(claims, key, required=False)
    return IdentityDocument(
        account_id=_shaped(claims, "accountId", _ACCOUNT),
        region=_shaped(claims, "region", _REGION),
        instance_id=_shaped(claims, "instanceId", _INSTANCE),
        availability_zone=_text(claims, "availabilityZone", required=True),
        image_id=_text(claims, "imageId", required=True),
        pending_time=parse_pending_time(claims.get("pendingTime")),
        instance_type=_text(claims, "instanceType", required=False),
        architecture=_text(claims, "architecture", required=False),
        private_ip=_text(claims, "privateIp", required=False),
        version=_text(claims, "version", required=False),
        claims=MappingProxyType(claims),
        verified_by=verified_by,
    )
