"""In-process attestation: the server half's challenge callback calls the agent half directly."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from swtpm_fixtures import ManufacturerCa, issue_ek_cert

from plastron.attestors.base import AttestationResult
from plastron.spiffe.ids import TrustDomain
from plastron.tpm.attestor import TpmAgentAttestor, TpmServerAttestor, TpmServerConfig

TD = TrustDomain("example.org")
Tamper = Callable[[bytes], bytes]
# Changes a decoded JSON payload in place.
PayloadEdit = Callable[[dict[str, Any]], None]


def server_for(ca_pem: bytes, tmp: Path, **kw: Any) -> TpmServerAttestor:
    ca_dir = tmp / "ek-cas"
    ca_dir.mkdir(exist_ok=True)
    (ca_dir / "manufacturer.pem").write_bytes(ca_pem)
    timeout = kw.pop("answer_timeout", 30.0)
    cfg = TpmServerConfig(endorsement_ca_path=str(ca_dir), **kw)
    return TpmServerAttestor(cfg, TD, answer_timeout=timeout)


async def attest(
    server: TpmServerAttestor,
    agent: TpmAgentAttestor,
    *,
    payload: Tamper | None = None,
    challenge: Tamper | None = None,
    answer: Tamper | None = None,
) -> AttestationResult:
    data = await agent.payload()
    if payload:
        data = payload(data)

    async def respond(msg: bytes) -> bytes:
        if challenge:
            msg = challenge(msg)
        out = await agent.answer(msg)
        return answer(out) if answer else out

    return await server.attest(data, respond)


def edit_json(field: str, change: Callable[[Any], Any]) -> Tamper:
    def tamper(data: bytes) -> bytes:
        obj = json.loads(data)
        obj[field] = change(obj[field])
        return json.dumps(obj).encode()

    return tamper


def flip_b64(value: str, index: int = -1) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def reissued_ek_cert(field: str, ca: ManufacturerCa, **validity: dt.datetime) -> PayloadEdit:
    """Replace the DER EK certificate in ``field`` by one for the same key from ``ca``."""

    def edit(obj: dict[str, Any]) -> None:
        cert = x509.load_der_x509_certificate(base64.b64decode(obj[field]))
        again = issue_ek_cert(ca, cert.public_key(), **validity)
        obj[field] = base64.b64encode(again.public_bytes(serialization.Encoding.DER)).decode()

    return edit


def swap(target: str, source: str) -> PayloadEdit:
    def edit(obj: dict[str, Any]) -> None:
        obj[target] = obj[source]

    return edit
