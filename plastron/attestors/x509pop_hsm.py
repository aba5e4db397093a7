"""An x509pop node key held in a PKCS#11 token, named by an RFC 7512 URI.

``pkcs11:token=<token label>;object=<key label>?module-path=<module .so>&pin-source=file:<pin>``
(or ``pin-source=env:<VAR>``). The key must have been generated in the token and be sensitive,
never extractable and for signing only: the hsm KeyManager refuses any other. Signing runs in
the token; nothing private is ever read. Imported only when ``private_key_uri`` is configured.
"""

from __future__ import annotations

from plastron.errors import ConfigError, NotFound
from plastron.hsm.config import parse_pkcs11_config
from plastron.hsm.keymanager import Pkcs11KeyManager
from plastron.hsm.session import open_token_session
from plastron.hsm.uri import parse_pkcs11_uri
from plastron.keymanager import PrivateKey
from plastron.spiffe.ids import TrustDomain

# Labels are given whole by the URI, so the manager's trust-domain scoping is not used.
_UNSCOPED = TrustDomain("x509pop.invalid")


def split_label(label: str) -> tuple[str, str]:
    """(scope, key id) for the KeyManager: the key id is the part after the last '/'."""
    scope, _, key_id = label.rpartition("/")
    return (scope + "/" if scope else ""), key_id


def open_node_key(uri: str) -> PrivateKey:
    parsed = parse_pkcs11_uri(uri)
    if not parsed.object_label:
        raise ConfigError("x509pop: private_key_uri must name the key with object=<label>")
    config = parse_pkcs11_config({"uri": uri})
    scope, key_id = split_label(parsed.object_label)
    manager = Pkcs11KeyManager(
        open_token_session(config), trust_domain=_UNSCOPED, server_id="x509pop", label_scope=scope
    )
    try:
        return manager.signer(key_id)
    except NotFound:
        raise ConfigError(
            f"x509pop: no private key labelled {parsed.object_label!r} in token "
            f"{config.describe_token()}"
        ) from None
