"""A signing key in a PKCS#11 token, named by an RFC 7512 URI (x509pop's ``private_key_uri``).

``pkcs11:token=<token label>;object=<key label>?module-path=<module .so>&pin-source=file:<pin>``
(or ``pin-source=env:<VAR>``). The key must have been generated in the token and be sensitive,
never extractable and for signing only: the pkcs11 KeyManager refuses any other. Signing runs
in the token; nothing private is ever read. Registered as the opener of ``pkcs11:`` key URIs
(:attr:`plastron.plugins.Registries.key_uri_openers`), so core reaches the key only through
the KeyManager protocol.
"""

from __future__ import annotations

from plastron.errors import ConfigError, NotFound
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import open_token_session
from plastron.hsm.uri import parse_pkcs11_uri
from plastron.keymanager import KeyManager
from plastron.spiffe.ids import TrustDomain

# Labels are given whole by the URI, so the manager's trust-domain scoping is not used.
_UNSCOPED = TrustDomain("x509pop.invalid")


def split_label(label: str) -> tuple[str, str]:
    """(scope, key id) for the KeyManager: the key id is the part after the last '/'."""
    scope, _, key_id = label.rpartition("/")
    return (scope + "/" if scope else ""), key_id


def open_uri_key(uri: str) -> tuple[KeyManager, str]:
    """A KeyManager on the URI's token and the id, in it, of the key the URI names."""
    parsed = parse_pkcs11_uri(uri)
    if not parsed.object_label:
        raise ConfigError("the pkcs11 URI must name the key with object=<label>")
    config = parse_pkcs11_config({"uri": uri})
    scope, key_id = split_label(parsed.object_label)
    manager = Pkcs11KeyManager(
        open_token_session(config), trust_domain=_UNSCOPED, server_id="x509pop", label_scope=scope
    )
    try:
        manager.get_public_key(key_id)
    except NotFound:
        manager.close()
        raise ConfigError(
            f"no private key labelled {parsed.object_label!r} in token {config.describe_token()}"
        ) from None
    return manager, key_id
