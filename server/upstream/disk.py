"""The ``disk`` UpstreamAuthority: an operator-held CA on disk signs each server CA.

Config (SPIRE's keys): ``cert_file_path`` (PEM: the upstream CA cert, optionally followed by
its intermediates), ``key_file_path`` (PEM, unencrypted private key of that CA) and
``bundle_file_path`` (PEM roots; required when the upstream CA is not self-signed).
Files are re-read on every mint so an operator can replace them without a restart.

Security considerations: the upstream key sits on disk in the clear, readable by the server
process; protect it with file permissions, or use the ``pkcs11`` upstream to keep it in an HSM.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.clock import Clock
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import ConfigError, FailedPrecondition, InvalidArgument
from plastron.keymanager import PrivateKey, PublicKey
from plastron.plugins import PluginContext, Registries
from plastron.spiffe.bundle import JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate
from plastron.upstream import UpstreamAuthority, UpstreamUnsupported
from plastron.wire.keys import spki_der

MAX_FILE_BYTES = 1 << 20
BACKDATE = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class DiskUpstreamConfig:
    cert_file_path: Path
    key_file_path: Path
    bundle_file_path: Path | None = None


@dataclass(frozen=True)
class _UpstreamCA:
    certificate: x509.Certificate
    key: PrivateKey
    intermediates: tuple[x509.Certificate, ...]  # between certificate and a root
    roots: tuple[x509.Certificate, ...]


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"disk upstream: cannot read {what} {str(path)!r}: {exc.strerror}"
        ) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"disk upstream: {what} {str(path)!r} exceeds {MAX_FILE_BYTES} bytes")
    return data


def _pem_certs(path: Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path, what))
    except ValueError as exc:
        raise ConfigError(f"disk upstream: {what} {str(path)!r} holds no PEM certificate") from exc
    if len(certs) > 16:
        raise ConfigError(f"disk upstream: {what} {str(path)!r} holds more than 16 certificates")
    return certs


def _spki(key: PublicKey | object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ConfigError(f"disk upstream: key type {type(key).__name__} is not EC or RSA")
    return spki_der(key)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def _describe(cert: x509.Certificate) -> str:
    return f"subject={cert.subject.rfc4514_string()!r}"


def load_upstream_ca(config: DiskUpstreamConfig) -> _UpstreamCA:
    """Load and check the files: key matches cert, cert is a CA, chain leads to a root."""
    certs = _pem_certs(config.cert_file_path, "cert_file_path")
    cert, extra = certs[0], certs[1:]
    try:
        key = serialization.load_pem_private_key(
            _read(config.key_file_path, "key_file_path"), password=None
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "disk upstream: key_file_path does not hold an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"disk upstream: key type {type(key).__name__} is not EC or RSA")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise ConfigError(
            f"disk upstream: key_file_path does not match the certificate ({_describe(cert)})"
        )
    if not _is_ca(cert):
        raise ConfigError(f"disk upstream: certificate is not a CA ({_describe(cert)})")
    if config.bundle_file_path is None:
        if extra or not _issued_by(cert, cert):
            raise ConfigError(
                "disk upstream: bundle_file_path is required when the upstream CA is not "
                f"self-signed ({_describe(cert)})"
            )
        return _UpstreamCA(cert, key, (), (cert,))
    roots = tuple(_pem_certs(config.bundle_file_path, "bundle_file_path"))
    _check_chain(cert, extra, roots)
    root_ders = {r.public_bytes(serialization.Encoding.DER) for r in roots}
    inter = tuple(c for c in extra if c.public_bytes(serialization.Encoding.DER) not in root_ders)
    if cert.public_bytes(serialization.Encoding.DER) in root_ders:
        inter = ()
    return _UpstreamCA(cert, key, inter, roots)


def _check_chain(
    cert: x509.Certificate, extra: list[x509.Certificate], roots: tuple[x509.Certificate, ...]
) -> None:
    """cert -> extra[0] -> ... -> one of roots, each link a verified signature."""
    current = cert
    for nxt in [*extra, None]:
        if any(_issued_by(current, root) for root in roots):
            return
        if nxt is None or not _issued_by(current, nxt):
            raise ConfigError(
                f"disk upstream: certificate chain does not lead to a root in bundle_file_path "
                f"(stuck at {_describe(current)})"
            )
        current = nxt


class DiskUpstreamAuthority:
    """Signs the server's CA with a CA held in files (see module docstring)."""

    def __init__(self, config: DiskUpstreamConfig, *, trust_domain: TrustDomain, clock: Clock):
        self._config = config
        self._td = trust_domain
        self._clock = clock
        load_upstream_ca(config)  # fail at start-up, not at the first rotation

    async def mint_x509_ca(
        self, csr: x509.CertificateSigningRequest, ttl: dt.timedelta
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        if not csr.is_signature_valid:
            raise InvalidArgument("disk upstream: CSR signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidArgument(f"disk upstream: CSR key {type(public_key).__name__} unsupported")
        if ttl <= dt.timedelta(0):
            raise InvalidArgument(f"disk upstream: ttl must be positive, got {ttl}")
        upstream = await asyncio.to_thread(load_upstream_ca, self._config)
        now = self._clock.now()
        if not upstream.certificate.not_valid_before_utc <= now:
            raise FailedPrecondition(
                f"disk upstream: CA is not valid yet ({_describe(upstream.certificate)})"
            )
        if now >= upstream.certificate.not_valid_after_utc:
            raise FailedPrecondition(
                f"disk upstream: CA has expired ({_describe(upstream.certificate)})"
            )
        ca = make_ca_certificate(
            trust_domain=self._td,
            public_key=public_key,
            issuer=upstream.certificate,
            issuer_key=upstream.key,
            not_before=now - BACKDATE,
            not_after=now + ttl,  # clamped to the upstream's notAfter by make_ca_certificate
            subject=csr.subject if len(csr.subject) else None,
        )
        chain = [ca]
        if upstream.certificate not in upstream.roots:
            chain += [upstream.certificate, *upstream.intermediates]
        return chain, list(upstream.roots)

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        raise UpstreamUnsupported("disk upstream does not publish JWT keys")


def _check_disk_upstream(plugin: PluginConfig, context: PluginContext) -> None:
    load_upstream_ca(_disk_upstream_config(plugin, context))  # reads and parses the files


def _disk_upstream_config(plugin: PluginConfig, context: PluginContext) -> DiskUpstreamConfig:
    settings = plugin.settings()
    cert, key = settings.string("cert_file_path"), settings.string("key_file_path")
    bundle = settings.optional_string("bundle_file_path")
    settings.finish()
    for name, value in (("cert_file_path", cert), ("key_file_path", key)):
        if not value:
            raise ConfigError(f"{settings.where(name)} must be a non-empty string")
    if context.trust_domain is None:
        raise ConfigError(f"{plugin.path}: the disk UpstreamAuthority needs the trust domain")
    return DiskUpstreamConfig(
        context.resolve(cert),
        context.resolve(key),
        context.resolve(bundle) if bundle is not None else None,
    )


def _disk_upstream(plugin: PluginConfig, context: PluginContext) -> UpstreamAuthority:
    config = _disk_upstream_config(plugin, context)
    assert context.trust_domain is not None  # checked with the settings
    return DiskUpstreamAuthority(config, trust_domain=context.trust_domain, clock=context.clock)


def register(registries: Registries) -> None:
    registries.upstream_authorities.register("disk", _disk_upstream, check=_check_disk_upstream)
