"""Messages of the ``tpm`` attestation method: strict JSON with base64 fields.

One stream, three messages (every field required unless noted; unknown keys, duplicate keys,
wrong types and oversize fields are refused):

  payload   {"v": 1, "ek_pub": b64 TPM2B_PUBLIC, "ek_cert": b64 DER (optional),
             "ek_chain": [b64 DER intermediate, …] (optional, ≤ 4), "ak_pub": b64 TPM2B_PUBLIC}
  challenge {"v": 1, "id_object": b64 TPM2B_ID_OBJECT, "encrypted_secret": b64
             TPM2B_ENCRYPTED_SECRET, "nonce": b64 (32 bytes), "pcrs": [int, …] (sha256 bank)}
  response  {"v": 1, "secret": b64 (activated credential), "quote": b64 TPM2B_ATTEST,
             "quote_sig": b64 TPMT_SIGNATURE, "pcrs": {"<index>": b64 (32 bytes), …}}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plastron.attestors.base import MAX_ATTESTATION_MESSAGE
from plastron.errors import AttestationFailed
from plastron.strict_json import load_untrusted_object

VERSION = 1
NONCE_SIZE = 32
MAX_TPM_BLOB = 2048
MAX_CERT = 8192
MAX_CHAIN = 4
MAX_PCR_INDEX = 23


def load_object(data: bytes, what: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    """Parse a bounded JSON object with exactly the ``required`` keys (plus any ``optional``).

    Any malformed input is AttestationFailed; keys from the input are only ever shown repr()'d
    (they may hold control characters or lone surrogates)."""
    obj = load_untrusted_object(
        data, limit=MAX_ATTESTATION_MESSAGE, what=f"tpm: {what}", error=AttestationFailed
    )
    missing = required - obj.keys()
    if missing:
        raise AttestationFailed(f"tpm: {what} lacks {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        shown = ", ".join(repr(k[:64]) for k in sorted(unknown)[:5])
        raise AttestationFailed(f"tpm: {what} has unknown keys {shown}")
    if "v" in required:
        version = obj["v"]
        # bool is an int in Python, and 1.0 == 1: only the JSON integer 1 is version 1
        if type(version) is not int or version != VERSION:
            raise AttestationFailed(f"tpm: {what} version {repr(version)[:40]} is not {VERSION}")
    return obj


def b64field(value: Any, name: str, limit: int, *, exact: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > (limit + 2) // 3 * 4:
        raise AttestationFailed(f"tpm: field {name} must be base64 of at most {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AttestationFailed(f"tpm: field {name} is not valid base64") from None
    if not raw or (exact is not None and len(raw) != exact):
        want = exact if exact is not None else "1.."
        raise AttestationFailed(f"tpm: field {name} is {len(raw)} bytes; expected {want}")
    return raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dump(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def pcr_index(value: Any, name: str) -> int:
    # JSON object keys are strings: accept "7" (not "07", not "७" or "²", which str.isdigit allows)
    if (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and len(value) <= 2
        and str(int(value)) == value
    ):
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_PCR_INDEX:
        shown = repr(value)[:40]
        raise AttestationFailed(f"tpm: {name} {shown} is not a PCR index 0..{MAX_PCR_INDEX}")
    return value


@dataclass(frozen=True)
class Payload:
    ek_pub: bytes
    ak_pub: bytes
    ek_cert: bytes | None = None
    ek_chain: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        obj: dict[str, Any] = {"v": VERSION, "ek_pub": b64(self.ek_pub), "ak_pub": b64(self.ak_pub)}
        if self.ek_cert is not None:
            obj["ek_cert"] = b64(self.ek_cert)
        if self.ek_chain:
            obj["ek_chain"] = [b64(c) for c in self.ek_chain]
        return dump(obj)

    @classmethod
    def parse(cls, data: bytes) -> Payload:
        obj = load_object(data, "payload", {"v", "ek_pub", "ak_pub"}, {"ek_cert", "ek_chain"})
        chain = obj.get("ek_chain", [])
        if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
            raise AttestationFailed(f"tpm: ek_chain must be a list of at most {MAX_CHAIN}")
        return cls(
            ek_pub=b64field(obj["ek_pub"], "ek_pub", MAX_TPM_BLOB),
            ak_pub=b64field(obj["ak_pub"], "ak_pub", MAX_TPM_BLOB),
            ek_cert=b64field(obj["ek_cert"], "ek_cert", MAX_CERT) if "ek_cert" in obj else None,
            ek_chain=tuple(b64field(c, "ek_chain[]", MAX_CERT) for c in chain),
        )


@dataclass(frozen=True)
class Challenge:
    id_object: bytes
    encrypted_secret: bytes
    nonce: bytes
    pcrs: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return dump(
            {
                "v": VERSION,
                "id_object": b64(self.id_object),
                "encrypted_secret": b64(self.encrypted_secret),
                "nonce": b64(self.nonce),
                "pcrs": list(self.pcrs),
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> Challenge:
        keys = {"v", "id_object", "encrypted_secret", "nonce", "pcrs"}
        obj = load_object(data, "challenge", keys, set())
        pcrs = obj["pcrs"]
        if not isinstance(pcrs, list) or not pcrs or len(pcrs) > MAX_PCR_INDEX + 1:
            raise AttestationFailed("tpm: challenge pcrs must be a non-empty list of PCR indices")
        return cls(
            id_object=b64field(obj["id_object"], "id_object", MAX_TPM_BLOB),
            encrypted_secret=b64field(obj["encrypted_secret"], "encrypted_secret", MAX_TPM_BLOB),
            nonce=b64field(obj["nonce"], "nonce", NONCE_SIZE, exact=NONCE_SIZE),
            pcrs=tuple(sorted({pcr_index(p, "challenge pcr") for p in pcrs})),
        )


@dataclass(frozen=True)
class Response:
    secret: bytes = field(repr=False)
    quote: bytes
    quote_sig: bytes
    pcrs: dict[int, bytes]

    def to_bytes(self) -> bytes:
        return dump(
            {
                "v": VERSION,
                "secret": b64(self.secret),
                "quote": b64(self.quote),
                "quote_sig": b64(self.quote_sig),
                "pcrs": {str(i): b64(v) for i, v in sorted(self.pcrs.items())},
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> Response:
        obj = load_object(data, "response", {"v", "secret", "quote", "quote_sig", "pcrs"}, set())
        pcrs = obj["pcrs"]
        if not isinstance(pcrs, dict) or len(pcrs) > MAX_PCR_INDEX + 1:
            raise AttestationFailed("tpm: response pcrs must be an object of PCR values")
        return cls(
            secret=b64field(obj["secret"], "secret", 64),
            quote=b64field(obj["quote"], "quote", MAX_TPM_BLOB),
            quote_sig=b64field(obj["quote_sig"], "quote_sig", MAX_TPM_BLOB),
            pcrs={
                pcr_index(k, "response pcr"): b64field(v, f"pcrs[{k}]", 64) for k, v in pcrs.items()
            },
        )
