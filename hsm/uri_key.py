"""A signing key in a PKCS#11 token, named by an RFC 7512 URI (x509pop's ``private_key_uri``).

``pkcs11:token=<token label>;object=<key label>?module-path=<module .so>&pin-source=file:<pin>``
(or ``pin-source=env:<VAR>``). The key must have been generated in the token and be sensitive,
never extractable and for signing only: the pkcs11 KeyManager refuses any other. Signing runs
in the token; nothing private is ever read. Registered as the opener of ``pkcs11:`` key URIs
(:attr:`plastron.plugins.Registries.key_uri_openers`), so core reaches the key only through
the KeyManager protocol.
"""

from __future__ import annotations

from plastron.errors import AlreadyExists, ConfigError, NotFound
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import open_token_session
from plastron.hsm.uri import parse_pkcs11_uri
from plastron.keymanager import KeyManager, KeyType, PublicKey
from plastron.spiffe.ids import TrustDomain

# Labels are given whole by the URI, so the manager's trust-domain scoping is not used.
_UNSCOPED = TrustDomain("x509pop.invalid")


def split_label(label: str) -> tuple[str, str]:
    """(scope, key id) for the KeyManager: the key id is the part after the last '/'."""
    scope, _, key_id = label.rpartition("/")
    return (scope + "/" if scope else ""), key_id


def _manager_for(uri: str) -> tuple[Pkcs11KeyManager, str, str]:
    """A KeyManager on the URI's token, the key id the URI names in it, and the token's name."""
    parsed = parse_pkcs11_uri(uri)
    if not parsed.object_label:
        raise ConfigError("the pkcs11 URI must name the key with object=<label>")
    config = parse_pkcs11_config({"uri": uri})
    scope, key_id = split_label(parsed.object_label)
    manager = Pkcs11KeyManager(
        open_token_session(config), trust_domain=_UNSCOPED, server_id="x509pop", label_scope=scope
    )
    return manager, key_id, config.describe_token()


def generate_uri_key(
    uri: str, key_type: KeyType, *, replace: bool = False
) -> tuple[Pkcs11KeyManager, str, PublicKey]:
    """Generate the key the URI names, in its token, with the attributes the pkcs11 KeyManager
    requires (sensitive, never extractable, sign-only): the KeyManager, the key id, the public
    key. AlreadyExists when the token holds a key under that label and ``replace`` is False."""
    manager, key_id, token = _manager_for(uri)
    try:
        if not replace:
            try:
                manager.get_public_key(key_id)
            except NotFound:
                pass
            else:
                raise AlreadyExists(
                    f"token {token} already holds a key labelled "
                    f"{manager.label_for(key_id)!r}; pass -replace to generate a new one"
                )
        public = manager.generate_key(key_id, key_type)
    except BaseException:
        manager.close()
        raise
    return manager, key_id, public


def open_uri_key(uri: str) -> tuple[KeyManager, str]:
    """A KeyManager on the URI's token and the id, in it, of the key the URI names."""
    manager, key_id, token = _manager_for(uri)
    try:
        manager.get_public_key(key_id)
    except NotFound:
        manager.close()
        raise ConfigError(
            f"no private key labelled {manager.label_for(key_id)!r} in token {token}"
        ) from None
    return manager, key_id
