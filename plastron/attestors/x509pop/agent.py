"""The agent half of ``x509pop``: send the node's certificate chain, then sign the server's
challenge with the node key (its config is :class:`~.config.X509PopAgentConfig`).

Files are read again at every attestation so a renewed certificate is picked up; the key must
match the leaf certificate or the attestation stops here, before anything is sent. A key named
by ``private_key_uri`` is opened once, at start, by the plugin factory and passed in fixed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.attestors.x509pop.config import X509PopAgentConfig
from plastron.attestors.x509pop.wire import (
    NAME,
    NONCE_LEN,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)
from plastron.errors import AttestationFailed, ConfigError
from plastron.wire.keys import spki_der

NodeKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
MAX_PEM_FILE_BYTES = 256 * 1024
MAX_CHAIN_CERTIFICATES = 16


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PEM_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"x509pop: cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_PEM_FILE_BYTES:
        raise ConfigError(
            f"x509pop: {what} {str(path)!r} is larger than {MAX_PEM_FILE_BYTES} bytes"
        )
    return data


def load_chain(config: X509PopAgentConfig) -> list[x509.Certificate]:
    """The node certificate followed by its intermediates, as configured."""
    chain: list[x509.Certificate] = []
    files = [(config.certificate_path, "certificate_path")]
    if config.intermediates_path is not None:
        files.append((config.intermediates_path, "intermediates_path"))
    for path, what in files:
        try:
            chain += x509.load_pem_x509_certificates(_read(path, what))
        except ValueError:
            raise ConfigError(f"x509pop: {what} {str(path)!r} holds no PEM certificate") from None
    if len(chain) > MAX_CHAIN_CERTIFICATES:
        raise ConfigError(
            f"x509pop: {len(chain)} certificates configured; limit {MAX_CHAIN_CERTIFICATES}"
        )
    return chain


def load_file_key(path: Path) -> NodeKey:
    data = _read(path, "private_key_path")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # never echo the file's content: it is a private key
        raise ConfigError(
            f"x509pop: private_key_path {str(path)!r} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ConfigError(f"x509pop: private_key_path {str(path)!r} must hold an RSA or EC key")
    return key


def _public_der(key: object) -> bytes:
    assert isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))
    return spki_der(key)


def check_key_matches(key: NodeKey, leaf: x509.Certificate) -> None:
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise ConfigError(
            "x509pop: the private key does not match the node certificate "
            f"(subject={leaf.subject.rfc4514_string()[:200]!r})"
        )


class X509PopAgentAttestor:
    """Agent half; ``key`` is a fixed (e.g. HSM) key, else the key file is read each time."""

    name = NAME

    def __init__(self, config: X509PopAgentConfig, *, key: NodeKey | None = None) -> None:
        if key is None and config.private_key_path is None:
            raise ConfigError("x509pop: no node key configured")
        self._config = config
        self._fixed_key = key
        self._key: NodeKey | None = None
        self._load()  # fail at start, not at the first attestation

    def __repr__(self) -> str:
        return f"X509PopAgentAttestor(certificate_path={str(self._config.certificate_path)!r})"

    def _load(self) -> tuple[list[x509.Certificate], NodeKey]:
        chain = load_chain(self._config)
        key = self._fixed_key
        if key is None:
            assert self._config.private_key_path is not None
            key = load_file_key(self._config.private_key_path)
        check_key_matches(key, chain[0])
        return chain, key

    async def payload(self) -> bytes:
        chain, key = await asyncio.to_thread(self._load)
        self._key = key
        return encode_payload([c.public_bytes(serialization.Encoding.DER) for c in chain])

    async def answer(self, challenge: bytes) -> bytes:
        key = self._key
        if key is None:
            raise AttestationFailed("x509pop: challenge received before the payload was sent")
        parsed = decode_challenge(challenge)
        # signing may block (RSA, or an HSM round trip): keep it off the event loop
        response = await asyncio.to_thread(sign_response, key, parsed, os.urandom(NONCE_LEN))
        return encode_response(response)
