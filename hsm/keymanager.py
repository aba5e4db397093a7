"""KeyManager ``pkcs11``: CA keys generated and used inside a PKCS#11 token.

Each key pair is stored in the token under the label
``<key_label_prefix><trust domain>/<server id>/<key id>`` (e.g.
``plastron/example.org/server-1/x509-CA-A``) with a random 16-byte CKA_ID shared by its two
halves. Private keys are created sensitive, non-extractable and for signing only; after
generation, and again whenever a key is looked up, the manager reads back ALWAYS_SENSITIVE,
NEVER_EXTRACTABLE and LOCAL and refuses a key that fails them. Two private keys under one
label are refused rather than guessed between.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from plastron.errors import ConfigError, InvalidArgument, KeyManagerError, NotFound
from plastron.hsm.config import Pkcs11Config, parse_pkcs11_config
from plastron.hsm.keys import HsmEllipticCurvePrivateKey, HsmRsaPrivateKey
from plastron.hsm.session import TokenSession, open_token_session
from plastron.keymanager import (
    KeyInfo,
    KeyManagerOpener,
    KeyType,
    PrivateKey,
    PublicKey,
    check_key_id,
    check_key_type,
    key_info,
)
from plastron.spiffe.ids import TrustDomain

SERVER_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
PENDING_SUFFIX = "#pending"  # '#' cannot occur in a key id, so this never names a real key
MAX_OBJECTS_SCANNED = 4096
_CURVES = {KeyType.EC_P256: "secp256r1", KeyType.EC_P384: "secp384r1"}
_RSA_BITS = {KeyType.RSA_2048: 2048, KeyType.RSA_4096: 4096}

# Attributes a CA private key must carry, checked on the object the token actually stored.
REQUIRED_TRUE = (
    Attribute.TOKEN,
    Attribute.PRIVATE,
    Attribute.SENSITIVE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.LOCAL,
    Attribute.SIGN,
)
REQUIRED_FALSE = (Attribute.EXTRACTABLE, Attribute.DECRYPT, Attribute.DERIVE, Attribute.UNWRAP)
PRIVATE_TEMPLATE = {a: True for a in (Attribute.TOKEN, Attribute.PRIVATE, Attribute.SENSITIVE)}
PRIVATE_TEMPLATE.update({Attribute.SIGN: True} | {a: False for a in REQUIRED_FALSE})
PUBLIC_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: False,
    Attribute.VERIFY: True,
    Attribute.ENCRYPT: False,
    Attribute.WRAP: False,
}


@dataclass(frozen=True)
class _Found:
    generation: int
    private: Any  # pkcs11 PrivateKey handle, valid while the session generation holds
    info: KeyInfo


def check_private_attributes(private: Any, label: str) -> None:
    """Refuse a private key whose stored attributes would let its value leave the token."""
    failed: list[str] = []
    for attr, want in [(a, True) for a in REQUIRED_TRUE] + [(a, False) for a in REQUIRED_FALSE]:
        try:
            value = bool(private[attr])
        except p11e.AttributeTypeInvalid:
            # capability flags a module does not keep for this key type cannot be set either
            if attr in REQUIRED_TRUE:
                failed.append(f"{attr.name} unreadable")
            continue
        if value != want:
            failed.append(f"{attr.name}={value}")
    if failed:
        raise KeyManagerError(
            f"pkcs11: key {label!r} is refused: {', '.join(failed)} (a CA key must be"
            " generated in the token, sensitive, never extractable and for signing only)"
        )


def _public_key(public: Any, label: str) -> tuple[PublicKey, KeyType]:
    if public.key_type == P11KeyType.EC:
        loaded = serialization.load_der_public_key(encode_ec_public_key(public))
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise KeyManagerError(f"pkcs11: public key of {label!r} is not an EC key")
        for kt, curve in _CURVES.items():
            if loaded.curve.name == curve:
                return loaded, kt
        raise KeyManagerError(f"pkcs11: key {label!r} uses unsupported curve {loaded.curve.name}")
    if public.key_type == P11KeyType.RSA:
        n = int.from_bytes(public[Attribute.MODULUS], "big")
        e = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        loaded_rsa = rsa.RSAPublicNumbers(e, n).public_key()
        for kt, bits in _RSA_BITS.items():
            if loaded_rsa.key_size == bits:
                return loaded_rsa, kt
        raise KeyManagerError(f"pkcs11: key {label!r} has unsupported size {loaded_rsa.key_size}")
    raise KeyManagerError(f"pkcs11: key {label!r} has unsupported type {public.key_type!r}")


def _is_key_id(text: str) -> bool:
    try:
        check_key_id(text)
    except InvalidArgument:
        return False  # e.g. a "#pending" key of an interrupted generation
    return True


class Pkcs11KeyManager:
    """KeyManager whose keys live in a PKCS#11 token; every call blocks (run it in a thread)."""

    blocking = True

    def __init__(
        self,
        session: TokenSession,
        *,
        trust_domain: TrustDomain,
        server_id: str,
        label_scope: str | None = None,
    ) -> None:
        """Keys are labelled ``<prefix><td>/<server_id>/<key id>``, or ``<label_scope><key id>``
        when ``label_scope`` is given (the upstream root, shared by every server of a domain)."""
        if not SERVER_ID_RE.fullmatch(server_id):
            raise ConfigError(
                f"pkcs11: server id {server_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ : -"
            )
        self._session = session
        self._naming = (trust_domain, server_id, label_scope)
        self._scope = f"{session.config.key_label_prefix}{trust_domain.name}/{server_id}/"
        if label_scope is not None:
            self._scope = label_scope
        self._found: dict[str, _Found] = {}

    def __repr__(self) -> str:
        return f"Pkcs11KeyManager({self._session!r}, labels={self._scope!r}*)"

    @property
    def config(self) -> Pkcs11Config:
        return self._session.config

    @property
    def session(self) -> TokenSession:
        return self._session

    def worker_opener(self) -> KeyManagerOpener:
        """Opens this manager again in a worker process: same token, same labels, its own
        logged-in session. Only the config travels (it names the PIN's source, not the PIN)."""
        trust_domain, server_id, label_scope = self._naming
        return functools.partial(
            open_pkcs11_key_manager,
            self.config,
            trust_domain=trust_domain,
            server_id=server_id,
            label_scope=label_scope,
        )

    def forget(self, key_id: str) -> None:
        """Drop what is cached about ``key_id``: another process may have replaced it."""
        self._found.pop(key_id, None)

    def label_for(self, key_id: str) -> str:
        """The token label for ``key_id``; InvalidArgument for an id the core rules refuse."""
        return self._scope + check_key_id(key_id)

    # -- lookups (run inside TokenSession.run, under the process lock) -----------------

    def _objects(self, s: Any, template: dict[Attribute, Any]) -> list[Any]:
        found: list[Any] = []
        for obj in s.get_objects(template):
            found.append(obj)
            if len(found) > MAX_OBJECTS_SCANNED:
                raise KeyManagerError(f"pkcs11: more than {MAX_OBJECTS_SCANNED} objects in token")
        return found

    def _lookup(self, s: Any, key_id: str) -> _Found:
        cached = self._found.get(key_id)
        if cached is not None and cached.generation == self._session.generation:
            return cached
        label = self.label_for(key_id)
        privs = self._objects(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
        if not privs:
            self._session.check_token(s)  # an absent token also answers "no such object"
            raise NotFound(f"pkcs11: no key {key_id!r} (label {label!r}) in the token")
        if len(privs) > 1:
            raise KeyManagerError(
                f"pkcs11: {len(privs)} private keys carry label {label!r}; refused"
            )
        private = privs[0]
        check_private_attributes(private, label)
        pubs = self._objects(
            s,
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.LABEL: label,
                Attribute.ID: private.id,
            },
        )
        if len(pubs) != 1:
            raise KeyManagerError(
                f"pkcs11: expected one public key for {label!r}, found {len(pubs)}"
            )
        public, key_type = _public_key(pubs[0], label)
        info = key_info(key_id, public)
        if info.key_type is not key_type:
            raise KeyManagerError(f"pkcs11: key {label!r} has an inconsistent type")
        found = _Found(self._session.generation, private, info)
        self._found[key_id] = found
        return found

    def _destroy_label(self, s: Any, label: str) -> None:
        for obj in self._objects(s, {Attribute.LABEL: label}):
            obj.destroy()

    def _generate(self, s: Any, key_type: KeyType, label: str) -> tuple[Any, Any]:
        common: dict[str, Any] = {
            "store": True,
            "label": label,
            "id": os.urandom(16),
            "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
            "public_template": PUBLIC_TEMPLATE,
            "private_template": PRIVATE_TEMPLATE,
        }
        if key_type in _CURVES:
            params = s.create_domain_parameters(
                P11KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                local=True,
            )
            return params.generate_keypair(**common)  # type: ignore[no-any-return]
        return s.generate_keypair(P11KeyType.RSA, _RSA_BITS[key_type], **common)  # type: ignore[no-any-return]

    # -- KeyManager ----------------------------------------------------------------------

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Generate ``key_id`` in the token, replacing the key that held the id before."""
        label = self.label_for(key_id)
        key_type = check_key_type(key_type)
        pending = label + PENDING_SUFFIX

        def op(s: Any) -> PublicKey:
            self._found.pop(key_id, None)
            self._destroy_label(s, pending)  # leftovers of an interrupted generation
            public, private = self._generate(s, key_type, pending)
            try:
                check_private_attributes(private, label)
            except KeyManagerError:
                private.destroy()
                public.destroy()
                raise
            # the new pair takes the label only once it passed the checks
            self._destroy_label(s, label)
            private[Attribute.LABEL] = label
            public[Attribute.LABEL] = label
            return self._lookup(s, key_id).info.public_key

        return self._session.run(f"generate {key_type.value} key {label!r}", op)

    def get_public_key(self, key_id: str) -> PublicKey:
        return self._session.run(
            f"find key {key_id!r}", lambda s: self._lookup(s, key_id).info.public_key
        )

    def get_key_info(self, key_id: str) -> KeyInfo:
        return self._session.run(f"find key {key_id!r}", lambda s: self._lookup(s, key_id).info)

    def get_public_keys(self) -> list[KeyInfo]:
        def op(s: Any) -> list[KeyInfo]:
            ids: list[str] = []
            for obj in self._objects(s, {Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                label = obj.label
                key_id = label[len(self._scope) :]
                if label.startswith(self._scope) and _is_key_id(key_id):
                    ids.append(key_id)
            return [self._lookup(s, key_id).info for key_id in sorted(set(ids))]

        return self._session.run("list keys", op)

    def signer(self, key_id: str) -> PrivateKey:
        """A cryptography key whose sign() runs in the token. It refuses to sign once
        ``key_id`` has been regenerated, so a stale signer never pairs the wrong public key."""
        info = self.get_key_info(key_id)
        label = self.label_for(key_id)

        def sign(mechanism: Mechanism, data: bytes, param: Any) -> bytes:
            def op(s: Any) -> bytes:
                found = self._lookup(s, key_id)
                if found.info.fingerprint != info.fingerprint:
                    raise KeyManagerError(f"pkcs11: key {label!r} was replaced; get a new signer")
                return bytes(found.private.sign(data, mechanism=mechanism, mechanism_param=param))

            return self._session.run(f"sign with {label!r}", op)

        if isinstance(info.public_key, ec.EllipticCurvePublicKey):
            return HsmEllipticCurvePrivateKey(label, info.public_key, sign)
        return HsmRsaPrivateKey(label, info.public_key, sign)

    def destroy_key(self, key_id: str) -> None:
        label = self.label_for(key_id)

        def op(s: Any) -> None:
            self._found.pop(key_id, None)
            self._destroy_label(s, label)
            self._destroy_label(s, label + PENDING_SUFFIX)

        self._session.run(f"destroy key {label!r}", op)

    def health_check(self) -> None:
        """Raise KeyManagerUnavailable unless the token answers now."""
        self._session.probe()

    def close(self) -> None:
        self._session.close()


def create_pkcs11_key_manager(
    plugin_data: Mapping[str, Any], *, trust_domain: TrustDomain, server_id: str
) -> Pkcs11KeyManager:
    """Build the ``pkcs11`` KeyManager from config and log in to the token now; a missing
    module, a missing token or a wrong PIN is one ConfigError here, at start."""
    config = parse_pkcs11_config(plugin_data)
    return open_pkcs11_key_manager(config, trust_domain=trust_domain, server_id=server_id)


def open_pkcs11_key_manager(
    config: Pkcs11Config,
    *,
    trust_domain: TrustDomain,
    server_id: str,
    label_scope: str | None = None,
) -> Pkcs11KeyManager:
    """The manager for an already parsed config, logged in now (ConfigError if it cannot)."""
    if not SERVER_ID_RE.fullmatch(server_id):
        raise ConfigError(
            f"pkcs11: server id {server_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ : -"
        )
    return Pkcs11KeyManager(
        open_token_session(config),
        trust_domain=trust_domain,
        server_id=server_id,
        label_scope=label_scope,
    )
