"""OIDC discovery for JWT-SVIDs: the discovery document, the JWKS of a trust domain's JWT
authorities, and the allow-list a request's Host must pass (SPIRE's oidc-discovery-provider).

It lives in core so any listener may serve it: the standalone ``plastron-oidc-discovery``
(``plastron.oidc``) and, later, the server's own HTTPS listener.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import ConfigError, InvalidArgument
from plastron.keymanager import PublicKey
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.jwk import public_key_to_jwk

KEYS_PATH = "keys"
WELL_KNOWN_PATH = ".well-known/openid-configuration"
# What SPIRE's provider announces; our JWT authorities are EC P-256/P-384 or RSA.
SIGNING_ALGS = ("RS256", "ES256", "ES384")
MAX_DOMAIN_CHARS = 253
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def jws_alg(key: PublicKey) -> str:
    """The JWS ``alg`` a JWT-SVID signed by ``key`` carries (what the CA signs with)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is not None:
            return alg
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    raise InvalidArgument(f"key type {type(key).__name__} has no JWS algorithm")


def jwks_document(bundle: Bundle, now: dt.datetime) -> dict[str, Any]:
    """The JWT authorities of ``bundle`` as an RFC 7517 key set for relying parties.

    Every key carries ``kid``, ``alg`` and ``use: sig`` (an OIDC relying party selects keys
    by them). Tainted keys stay: tokens they signed are valid until they expire, as SPIRE's
    provider serves them. Keys past their expiry are left out: they can verify nothing valid.
    """
    keys: list[dict[str, Any]] = []
    for authority in bundle.jwt_authorities:
        if authority.expires_at is not None and authority.expires_at <= now:
            continue
        jwk = public_key_to_jwk(authority.public_key)
        jwk["kid"] = authority.key_id
        jwk["use"] = "sig"
        jwk["alg"] = jws_alg(authority.public_key)
        keys.append(jwk)
    return {"keys": keys}


def discovery_document(issuer: str, jwks_uri: str) -> dict[str, Any]:
    """The OpenID Provider metadata a relying party reads (OIDC Discovery 1.0 §3): the
    required members, with the values SPIRE's provider gives (no authorization endpoint)."""
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
    }


def domain_key(domain: str) -> str:
    """A host name as the allow-list compares it: ASCII (punycode already, as SPIRE requires),
    lower case, each label a DNS label. InvalidArgument naming the value otherwise."""
    shown = domain[:MAX_DOMAIN_CHARS]
    if not domain or len(domain) > MAX_DOMAIN_CHARS or not domain.isascii():
        if domain and not domain.isascii():
            raise InvalidArgument(f"domain {shown!r} must already be punycode encoded")
        raise InvalidArgument(f"domain {shown!r} is not a valid domain name")
    key = domain.lower().removesuffix(".")
    if not all(_LABEL.match(label) for label in key.split(".")):
        raise InvalidArgument(f"domain {shown!r} is not a valid domain name")
    return key


def host_domain(host: str) -> str:
    """The domain of a Host header value (``name`` or ``name:port``; a bracketed IPv6 literal
    keeps no brackets and is refused by the allow-list as not a domain name)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


class DomainAllowList:
    """SPIRE's ``domains``: the documents are served only for these host names."""

    def __init__(self, domains: Iterable[str]) -> None:
        self._allowed: frozenset[str] = frozenset()
        keys = set()
        for domain in domains:
            try:
                keys.add(domain_key(domain))
            except InvalidArgument as exc:
                raise ConfigError(f"domains: {exc}") from None
        if not keys:
            raise ConfigError("domains must be configured (the host names this is served as)")
        self._allowed = frozenset(keys)

    def check(self, host: str) -> None:
        """InvalidArgument unless ``host`` (a Host header value) names an allowed domain."""
        domain = host_domain(host)
        if domain_key(domain) not in self._allowed:
            raise InvalidArgument(f"domain {domain[:MAX_DOMAIN_CHARS]!r} is not allowed")
