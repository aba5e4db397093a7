"""SPIRE's x509pop wire formats and the proof-of-possession signature.

All three messages are JSON with Go's ``[]byte`` encoding (standard, padded base64):

- payload (agent → server): ``{"certificates": ["<DER>", ...]}``, leaf first;
- challenge (server → agent): ``{"rsa_signature": {"nonce": "<32 bytes>"}, "ecdsa_signature":
  null}`` or the ECDSA twin, chosen by the leaf's key type;
- response (agent → server): ``{"rsa_signature": {"nonce": "<32 bytes>", "signature": "..."}}``
  or ``{"ecdsa_signature": {"nonce": "...", "r": "...", "s": "..."}}``; the absent half may be
  ``null`` (Go marshals a nil pointer so).

The agent adds its own 32-byte nonce and signs SHA-256(server nonce ‖ agent nonce) as a
digest: RSA-PSS with SHA-256 and MGF1-SHA-256, or ECDSA (r and s as unsigned big-endian bytes).
Decoders are strict: exact keys, no duplicates, bounded sizes, every value typed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from plastron.attestors.base import MAX_ATTESTATION_MESSAGE
from plastron.errors import AttestationFailed, InvalidArgument
from plastron.strict_json import load_untrusted_object

NAME = "x509pop"
NONCE_LEN = 32
# r and s of a P-521 signature are at most 66 bytes; an 8192-bit RSA signature 1024.
MAX_ECDSA_INTEGER = 66
MAX_RSA_SIGNATURE = 2048
KeyKind = Literal["rsa", "ecdsa"]
_FIELD = {"rsa": "rsa_signature", "ecdsa": "ecdsa_signature"}


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    return load_untrusted_object(
        data, limit=MAX_ATTESTATION_MESSAGE, what=f"x509pop: {what}", error=InvalidArgument
    )


def _check_keys(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidArgument(f"x509pop: {what} has unknown key {unknown[0]!r}")


def _b64(value: Any, what: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(f"x509pop: {what} must be a base64 string")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise InvalidArgument(f"x509pop: {what} is longer than {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"x509pop: {what} is not valid base64") from None


def _enc(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


# ---- payload ------------------------------------------------------------------------------


def encode_payload(chain_der: Sequence[bytes]) -> bytes:
    return _dumps({"certificates": [_enc(der) for der in chain_der]})


def decode_payload(payload: bytes, max_certificates: int) -> list[bytes]:
    """The DER certificates of the payload, leaf first; the count is checked before decoding."""
    obj = _load_object(payload, "attestation payload")
    _check_keys(obj, {"certificates"}, "attestation payload")
    certs = obj.get("certificates")
    if certs is None or (isinstance(certs, list) and not certs):
        raise InvalidArgument("x509pop: attestation payload holds no certificate to attest")
    if not isinstance(certs, list):
        raise InvalidArgument("x509pop: attestation payload 'certificates' must be a list")
    if len(certs) > max_certificates:
        raise InvalidArgument(
            f"x509pop: too many intermediate certificates ({len(certs) - 1}; "
            f"max_intermediates is {max_certificates - 1})"
        )
    return [_b64(c, f"certificate {i}", MAX_ATTESTATION_MESSAGE) for i, c in enumerate(certs)]


# ---- challenge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    kind: KeyKind
    nonce: bytes = b""

    def __repr__(self) -> str:
        return f"Challenge(kind={self.kind!r})"


def encode_challenge(challenge: Challenge) -> bytes:
    # both keys, RSA first, the absent one null: byte-for-byte what SPIRE's Go server sends
    body = {"nonce": _enc(challenge.nonce)}
    rsa_half = body if challenge.kind == "rsa" else None
    ecdsa_half = body if challenge.kind == "ecdsa" else None
    return _dumps({"rsa_signature": rsa_half, "ecdsa_signature": ecdsa_half})


def _one_half(obj: dict[str, Any], what: str) -> tuple[KeyKind, dict[str, Any]]:
    _check_keys(obj, set(_FIELD.values()), what)
    present = [(k, obj[f]) for k, f in _FIELD.items() if obj.get(f) is not None]
    if len(present) != 1:
        raise InvalidArgument(
            f"x509pop: {what} must carry exactly one of rsa_signature, ecdsa_signature"
        )
    kind, body = present[0]
    if not isinstance(body, dict):
        raise InvalidArgument(f"x509pop: {what} {_FIELD[kind]} must be a JSON object")
    return "rsa" if kind == "rsa" else "ecdsa", body


def _nonce(body: dict[str, Any], what: str) -> bytes:
    nonce = _b64(body.get("nonce"), f"{what} nonce", NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise InvalidArgument(
            f"x509pop: {what} nonce is {len(nonce)} bytes; it must be {NONCE_LEN}"
        )
    return nonce


def decode_challenge(data: bytes) -> Challenge:
    obj = _load_object(data, "challenge")
    kind, body = _one_half(obj, "challenge")
    _check_keys(body, {"nonce"}, "challenge")
    return Challenge(kind, _nonce(body, "challenge"))


# ---- response -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    kind: KeyKind
    nonce: bytes
    signature: bytes = b""  # RSA
    r: bytes = b""  # ECDSA
    s: bytes = b""

    def __repr__(self) -> str:
        return f"Response(kind={self.kind!r})"


def encode_response(response: Response) -> bytes:
    if response.kind == "rsa":
        body = {"nonce": _enc(response.nonce), "signature": _enc(response.signature)}
        return _dumps({"rsa_signature": body, "ecdsa_signature": None})
    body = {"nonce": _enc(response.nonce), "r": _enc(response.r), "s": _enc(response.s)}
    return _dumps({"rsa_signature": None, "ecdsa_signature": body})


def decode_response(data: bytes) -> Response:
    obj = _load_object(data, "challenge response")
    kind, body = _one_half(obj, "challenge response")
    nonce = _nonce(body, "challenge response")
    if kind == "rsa":
        _check_keys(body, {"nonce", "signature"}, "challenge response")
        sig = _b64(body.get("signature"), "challenge response signature", MAX_RSA_SIGNATURE)
        return Response("rsa", nonce, signature=sig)
    _check_keys(body, {"nonce", "r", "s"}, "challenge response")
    r = _b64(body.get("r"), "challenge response r", MAX_ECDSA_INTEGER)
    s = _b64(body.get("s"), "challenge response s", MAX_ECDSA_INTEGER)
    return Response("ecdsa", nonce, r=r, s=s)


# ---- the signature ------------------------------------------------------------------------


def combine_nonces(server_nonce: bytes, agent_nonce: bytes) -> bytes:
    if len(server_nonce) != NONCE_LEN or len(agent_nonce) != NONCE_LEN:
        raise InvalidArgument(f"x509pop: nonces must be {NONCE_LEN} bytes")
    return hashlib.sha256(server_nonce + agent_nonce).digest()


def key_kind(key: object) -> KeyKind:
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "rsa"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return "ecdsa"
    raise InvalidArgument(
        f"x509pop: unsupported key type {type(key).__name__}; the node key must be RSA or EC"
    )


def _unsigned(value: int) -> bytes:
    # Go's big.Int.Bytes(): minimal big-endian, empty for zero
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def sign_response(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, challenge: Challenge, agent_nonce: bytes
) -> Response:
    """Answer ``challenge`` with ``key`` (may block: an HSM key signs in its token)."""
    kind = key_kind(key)
    if kind != challenge.kind:
        raise AttestationFailed(
            f"x509pop: the server sent an {challenge.kind} challenge but the node key is {kind}"
        )
    digest = combine_nonces(challenge.nonce, agent_nonce)
    if isinstance(key, rsa.RSAPrivateKey):
        # digest-length salt: accepted by SPIRE (it verifies with PSSSaltLengthAuto) and by HSMs
        signature = key.sign(
            digest,
            padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
            Prehashed(hashes.SHA256()),
        )
        return Response("rsa", agent_nonce, signature=signature)
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
    return Response("ecdsa", agent_nonce, r=_unsigned(r), s=_unsigned(s))


def verify_response(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    challenge: Challenge,
    response: Response,
) -> None:
    """Raise AttestationFailed unless ``response`` is the leaf key's signature over this
    challenge's nonce and the response's own nonce."""
    if response.kind != challenge.kind:
        raise AttestationFailed(
            f"x509pop: expected an {challenge.kind} challenge response, got {response.kind}"
        )
    digest = combine_nonces(challenge.nonce, response.nonce)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if len(response.signature) != (public_key.key_size + 7) // 8:
                raise InvalidSignature
            public_key.verify(
                response.signature,
                digest,
                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                Prehashed(hashes.SHA256()),
            )
        else:
            der = encode_dss_signature(
                int.from_bytes(response.r, "big"), int.from_bytes(response.s, "big")
            )
            public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        raise AttestationFailed(
            f"x509pop: challenge response verification failed: the {response.kind} signature "
            "does not verify with the leaf certificate's key over this challenge"
        ) from None
