"""The agent half of ``x509pop``: send the node's certificate chain, then sign the server's
challenge with the node key.

Config (``plugin_data``), as SPIRE's agent plugin plus one key:

- ``certificate_path``: PEM, the node certificate first, then any intermediates;
- ``intermediates_path`` (optional): PEM intermediates appended after those;
- ``private_key_path``: PEM private key (PKCS#1, SEC1 or PKCS#8, unencrypted), **or**
- ``private_key_uri``: ``pkcs11:token=<label>;object=<key label>?module-path=<module>&
  pin-source=file:<path>`` — a node key held in an HSM (generated in the token, sensitive,
  never extractable); it signs in the token and is never read. The hsm room opens it (see
  :data:`plastron.plugins.KEY_URI_OPENERS`).

Files are read again at every attestation so a renewed certificate is picked up; the key must
match the leaf certificate or the attestation stops here, before anything is sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.attestors.x509pop_wire import (
    NAME,
    NONCE_LEN,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError, PlastronError
from plastron.plugins import PluginContext, check_plugin_data, open_key_uri

NodeKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
AGENT_KEYS = ("certificate_path", "intermediates_path", "private_key_path", "private_key_uri")
MAX_PEM_FILE_BYTES = 256 * 1024
MAX_CHAIN_CERTIFICATES = 16


@dataclass(frozen=True)
class X509PopAgentConfig:
    certificate_path: Path
    private_key_path: Path | None = None
    private_key_uri: str | None = None
    intermediates_path: Path | None = None

    @classmethod
    def from_plugin_data(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None, where: str = "x509pop"
    ) -> X509PopAgentConfig:
        def path(key: str) -> Path | None:
            value = data.get(key)
            if value is None or (key == "intermediates_path" and value == ""):
                return None
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}.{key} must be a non-empty string")
            p = Path(value)
            return base_dir / p if base_dir is not None and not p.is_absolute() else p

        cert = path("certificate_path")
        if cert is None:
            raise ConfigError(f"{where}.certificate_path is required")
        key_path, uri = path("private_key_path"), data.get("private_key_uri")
        if (key_path is None) == (uri is None):
            raise ConfigError(f"{where}: give exactly one of private_key_path, private_key_uri")
        if uri is not None and (not isinstance(uri, str) or not uri.startswith("pkcs11:")):
            raise ConfigError(f"{where}.private_key_uri must be a pkcs11: URI")
        return cls(cert, key_path, uri, path("intermediates_path"))


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
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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


def create_agent_attestor(plugin: PluginConfig, context: PluginContext) -> X509PopAgentAttestor:
    check_plugin_data(plugin, AGENT_KEYS)
    config = X509PopAgentConfig.from_plugin_data(
        plugin.plugin_data, base_dir=context.base_dir, where=f"{plugin.path}.plugin_data"
    )
    key = None
    if config.private_key_uri is not None:
        # the room that owns the URI scheme (hsm, for pkcs11:) opens the key
        try:
            key = open_key_uri(config.private_key_uri)
        except PlastronError as exc:
            raise ConfigError(f"x509pop: private_key_uri: {exc}") from None
    return X509PopAgentAttestor(config, key=key)
