"""Keys and a small PKI for the SPIFFE credential tests; time is fixed, never the wall clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.keymanager import PrivateKey
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
TD = TrustDomain("example.org")
WORKLOAD = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")

KEY_MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@dataclass
class Pki:
    """A self-signed root, an intermediate under it, and a workload leaf under that."""

    root: x509.Certificate
    root_key: PrivateKey
    inter: x509.Certificate
    inter_key: PrivateKey
    leaf: x509.Certificate
    leaf_key: PrivateKey


def make_root(key: PrivateKey, td: TrustDomain = TD) -> x509.Certificate:
    return make_ca_certificate(
        trust_domain=td,
        public_key=key.public_key(),
        issuer=None,
        issuer_key=key,
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(days=1),
    )


def make_pki(kind: str) -> Pki:
    make_key = KEY_MAKERS[kind]
    root_key, inter_key, leaf_key = make_key(), make_key(), make_key()
    root = make_root(root_key)
    inter = make_ca_certificate(
        trust_domain=TD,
        public_key=inter_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(hours=12),
    )
    leaf = make_x509_svid(
        spiffe_id=WORKLOAD,
        public_key=leaf_key.public_key(),
        issuer=inter,
        issuer_key=inter_key,
        not_before=NOW - dt.timedelta(seconds=10),
        not_after=NOW + dt.timedelta(hours=1),
        dns_names=["web.example.org", "web"],
    )
    return Pki(root, root_key, inter, inter_key, leaf, leaf_key)
