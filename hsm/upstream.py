"""UpstreamAuthority ``pkcs11``: a long-lived root CA whose key never leaves the HSM.

At start the authority finds the root key in the token by label (creating it on first use, or
using a key an operator made there) and the root certificate stored next to it as a
CKO_CERTIFICATE object with the same label and CKA_ID (self-signed on first use). At each CA
rotation the server sends a CSR for its next intermediate; the root signs it inside the HSM.
The bundle carries the HSM root, so SVIDs chain to a root that outlives every rotation.

Where the intermediate's key lives is the server's ``KeyManager`` choice: ``memory`` is the
fast mode (only one HSM signature per rotation), ``pkcs11`` keeps it in the HSM as well (every
SVID signature is an HSM call). See docs/hsm.md for the trade-off.

plugin_data: the KeyManager's token keys (module_path, token_label | slot_id | token_serial,
pin_env | pin_file, key_label_prefix, or uri) plus ``root_key_id`` (default ``upstream-root``,
labelled ``<prefix><td>/<root_key_id>``), or ``root_key_label`` (an exact label, for a key made
by the operator), ``root_key_type`` (default ec-p384) and ``root_ttl`` (default 87600h).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, CertificateType, ObjectClass

from plastron.clock import Clock
from plastron.configs.block import Block
from plastron.errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound
from plastron.hsm.config import Pkcs11Config, read_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import open_token_session
from plastron.keymanager import KeyType, PrivateKey, check_key_id
from plastron.spiffe.bundle import JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate
from plastron.upstream import UpstreamUnsupported
from plastron.wire.keys import spki_der

BACKDATE = dt.timedelta(seconds=10)
DEFAULT_ROOT_TTL = dt.timedelta(days=3650)
MAX_CERT_BYTES = 64 * 1024
DEFAULT_ROOT_KEY_ID = "upstream-root"


def _spki(key: Any) -> bytes:
    return spki_der(key)


class Pkcs11UpstreamAuthority:
    """Signs each server CA with the HSM-held root (see module docstring)."""

    blocking = False  # async API; the HSM work runs in a thread

    def __init__(
        self,
        keys: Pkcs11KeyManager,
        *,
        root_key_id: str,
        root_key_type: KeyType,
        root_ttl: dt.timedelta,
        trust_domain: TrustDomain,
        clock: Clock,
    ) -> None:
        self._keys = keys
        self._root_id = root_key_id
        self._td = trust_domain
        self._clock = clock
        self._root_cert = self._ensure_root(root_key_type, root_ttl)

    def __repr__(self) -> str:
        return f"Pkcs11UpstreamAuthority(root={self._keys.label_for(self._root_id)!r})"

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root_cert

    def _ensure_root(self, key_type: KeyType, ttl: dt.timedelta) -> x509.Certificate:
        try:
            public = self._keys.get_public_key(self._root_id)
        except NotFound:
            public = self._keys.generate_key(self._root_id, key_type)
        stored = self._stored_certificates()
        matching = [c for c in stored if _spki(c.public_key()) == _spki(public)]
        now = self._clock.now()
        valid = [c for c in matching if c.not_valid_before_utc <= now < c.not_valid_after_utc]
        if valid:
            return max(valid, key=lambda c: c.not_valid_after_utc)
        if matching:
            raise FailedPrecondition(
                f"pkcs11 upstream: the root certificate for {self._label!r} is not valid at"
                f" {now.isoformat()}; replace it (no new root is made silently)"
            )
        cert = make_ca_certificate(
            trust_domain=self._td,
            public_key=public,
            issuer=None,
            issuer_key=self._keys.signer(self._root_id),
            not_before=now - BACKDATE,
            not_after=now + ttl,
            subject=x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{self._td.name} HSM root"),
                ]
            ),
        )
        self._store_certificate(cert)
        return cert

    @property
    def _label(self) -> str:
        return self._keys.label_for(self._root_id)

    def _stored_certificates(self) -> list[x509.Certificate]:
        label = self._label

        def op(s: Any) -> list[bytes]:
            found = s.get_objects(
                {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
            )
            return [bytes(obj[Attribute.VALUE]) for obj in list(found)[:16]]

        certs = []
        for der in self._keys.session.run(f"read root certificate {label!r}", op):
            if len(der) > MAX_CERT_BYTES:
                raise ConfigError(f"pkcs11 upstream: certificate {label!r} is oversized")
            try:
                certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                raise ConfigError(
                    f"pkcs11 upstream: object {label!r} is not a DER certificate"
                ) from None
        return certs

    def _store_certificate(self, cert: x509.Certificate) -> None:
        label = self._label
        key_id = self._keys.session.run(
            f"find root key {label!r}",
            lambda s: s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label).id,
        )
        template = {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.ID: key_id,
            Attribute.SUBJECT: cert.subject.public_bytes(),
            Attribute.ISSUER: cert.issuer.public_bytes(),
            Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
        }
        self._keys.session.run(
            f"store root certificate {label!r}", lambda s: s.create_object(template)
        )

    def _mint(
        self, csr: x509.CertificateSigningRequest, ttl: dt.timedelta
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        if not csr.is_signature_valid:
            raise InvalidArgument("pkcs11 upstream: CSR signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidArgument(
                f"pkcs11 upstream: CSR key {type(public_key).__name__} is not EC or RSA"
            )
        if ttl <= dt.timedelta(0):
            raise InvalidArgument(f"pkcs11 upstream: ttl must be positive, got {ttl}")
        now = self._clock.now()
        root = self._root_cert
        if not root.not_valid_before_utc <= now < root.not_valid_after_utc:
            raise FailedPrecondition(
                f"pkcs11 upstream: root {self._label!r} is not valid at {now.isoformat()}"
            )
        signer: PrivateKey = self._keys.signer(self._root_id)
        if _spki(signer.public_key()) != _spki(root.public_key()):
            raise FailedPrecondition(
                f"pkcs11 upstream: key {self._label!r} no longer matches the root certificate"
            )
        ca = make_ca_certificate(
            trust_domain=self._td,
            public_key=public_key,
            issuer=root,
            issuer_key=signer,
            not_before=now - BACKDATE,
            not_after=now + ttl,  # clamped to the root's notAfter
            subject=csr.subject if len(csr.subject) else None,
        )
        return [ca], [root]

    async def mint_x509_ca(
        self, csr: x509.CertificateSigningRequest, ttl: dt.timedelta
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        return await asyncio.to_thread(self._mint, csr, ttl)

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        raise UpstreamUnsupported("pkcs11 upstream does not publish JWT keys")

    def health_check(self) -> None:
        """Raise KeyManagerUnavailable unless the token answers now."""
        self._keys.health_check()

    def close(self) -> None:
        self._keys.close()


def create_pkcs11_upstream_authority(
    plugin_data: Mapping[str, Any], *, trust_domain: TrustDomain, clock: Clock
) -> Pkcs11UpstreamAuthority:
    """Build the ``pkcs11`` UpstreamAuthority from a plain mapping of its plugin_data."""
    settings = Block(dict(plugin_data), "pkcs11 upstream plugin_data")
    return open_pkcs11_upstream_authority(settings, trust_domain=trust_domain, clock=clock)


@dataclass(frozen=True)
class UpstreamSettings:
    """The ``pkcs11`` UpstreamAuthority's plugin_data, read without touching the token."""

    token: Pkcs11Config
    root_id: str
    scope: str
    root_key_type: KeyType
    root_ttl: dt.timedelta


def read_upstream_settings(settings: Block, trust_domain: TrustDomain) -> UpstreamSettings:
    root_key_id = settings.optional_string("root_key_id")
    root_key_label = settings.optional_string("root_key_label")
    if root_key_id is not None and root_key_label is not None:
        raise ConfigError(f"{settings.path}: set root_key_id or root_key_label, not both")
    key_type = settings.key_type("root_key_type", KeyType.EC_P384)
    ttl = settings.duration("root_ttl", DEFAULT_ROOT_TTL)
    config = read_pkcs11_config(settings)  # the token's keys; refuses any other
    try:
        if root_key_label is not None:
            scope, root_id = "", check_key_id(root_key_label)
        else:
            root_id = check_key_id(root_key_id or DEFAULT_ROOT_KEY_ID)
            scope = f"{config.key_label_prefix}{trust_domain.name}/"
    except InvalidArgument as exc:
        raise ConfigError(f"pkcs11 upstream: {exc}") from None
    return UpstreamSettings(config, root_id, scope, key_type, ttl)


def open_pkcs11_upstream_authority(
    settings: Block, *, trust_domain: TrustDomain, clock: Clock
) -> Pkcs11UpstreamAuthority:
    """Build the ``pkcs11`` UpstreamAuthority, logging in and loading (or making) the root."""
    read = read_upstream_settings(settings, trust_domain)
    session = open_token_session(read.token)
    keys = Pkcs11KeyManager(
        session, trust_domain=trust_domain, server_id="-", label_scope=read.scope
    )
    try:
        return Pkcs11UpstreamAuthority(
            keys,
            root_key_id=read.root_id,
            root_key_type=read.root_key_type,
            root_ttl=read.root_ttl,
            trust_domain=trust_domain,
            clock=clock,
        )
    except BaseException:
        keys.close()
        raise
