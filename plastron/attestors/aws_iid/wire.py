"""The aws_iid attestation payload, SPIRE's JSON: ``{"document": "...", "signature": "...",
"rsa2048": "..."}``, each value the text the metadata service served. Plastron's agent sends
all three as SPIRE's does; ``pkcs7`` (the legacy DSA signature) may be added and is used only
where the server allows it. An empty value counts as absent (SPIRE's Go struct sends ``""``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from plastron.attestors.aws_iid.document import NAME
from plastron.attestors.base import MAX_ATTESTATION_MESSAGE
from plastron.errors import InvalidArgument
from plastron.strict_json import load_untrusted_object

KEYS = ("document", "signature", "rsa2048", "pkcs7")


@dataclass(frozen=True)
class Payload:
    document: bytes
    signature: str | None = None
    rsa2048: str | None = None
    pkcs7: str | None = None

    def __repr__(self) -> str:
        present = [k for k in KEYS[1:] if getattr(self, k)]
        return f"Payload(document={len(self.document)} bytes, signatures={present})"


def encode_payload(payload: Payload) -> bytes:
    body: dict[str, str] = {"document": payload.document.decode("utf-8")}
    for key in KEYS[1:]:
        value = getattr(payload, key)
        if value is not None:
            body[key] = value
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _string(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{NAME}: attestation payload {key!r} must be a string")
    return value


def decode_payload(data: bytes) -> Payload:
    obj = load_untrusted_object(
        data,
        limit=MAX_ATTESTATION_MESSAGE,
        what=f"{NAME}: attestation payload",
        error=InvalidArgument,
    )
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise InvalidArgument(f"{NAME}: attestation payload has unknown key {unknown[0]!r}")
    document = _string(obj, "document")
    if document is None:
        raise InvalidArgument(f"{NAME}: attestation payload has no instance identity document")
    return Payload(
        document=document.encode("utf-8"),
        signature=_string(obj, "signature"),
        rsa2048=_string(obj, "rsa2048"),
        pkcs7=_string(obj, "pkcs7"),
    )
