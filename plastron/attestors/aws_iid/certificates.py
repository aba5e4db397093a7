"""AWS's published instance-identity certificates, by kind and region, plus configured extras.

Three kinds, one per signature an instance's metadata service offers (see certs/README.md):

- ``rsa2048``: verifies the ``rsa2048`` CMS SignedData (RSA-2048, SHA-256);
- ``rsa``: verifies the raw ``signature`` (RSA PKCS#1 v1.5, SHA-256);
- ``dsa``: verifies the legacy ``pkcs7`` CMS SignedData (DSA, SHA-1; the two China regions'
  certificates in this set hold RSA keys).

The region always comes from the document being verified, which the attacker writes: it is only
ever a key into the table loaded at start, never part of a file path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from plastron.errors import ConfigError

Kind = Literal["rsa2048", "rsa", "dsa"]
KINDS: tuple[Kind, ...] = ("rsa2048", "rsa", "dsa")
MAX_CERTIFICATE_FILE_BYTES = 256 * 1024
_PACKAGE = "plastron.attestors.aws_iid"

Table = Mapping[Kind, Mapping[str, tuple[x509.Certificate, ...]]]


def check_key(kind: Kind, cert: x509.Certificate, where: str) -> None:
    """The key type a kind's signatures need: RSA for rsa2048 and rsa, DSA or RSA for dsa."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) or (kind == "dsa" and isinstance(key, dsa.DSAPublicKey)):
        return
    want = "DSA or RSA" if kind == "dsa" else "RSA"
    raise ConfigError(
        f"{where}: a {kind} certificate must hold a {want} key, not {type(key).__name__}"
    )


def load_pem_file(data: bytes, kind: Kind, where: str) -> tuple[x509.Certificate, ...]:
    if len(data) > MAX_CERTIFICATE_FILE_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_CERTIFICATE_FILE_BYTES} bytes")
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise ConfigError(f"{where} holds no PEM certificate") from None
    for cert in certs:
        check_key(kind, cert, where)
    return certs


class AwsCertificates:
    """Certificates by kind and region; several per region are tried in turn."""

    def __init__(self, table: Table) -> None:
        self._table: Table = MappingProxyType(
            {k: MappingProxyType(dict(table.get(k, {}))) for k in KINDS}
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(self._table[k])} regions" for k in KINDS)
        return f"AwsCertificates({counts})"

    @classmethod
    def published(cls) -> AwsCertificates:
        """The certificates AWS publishes, shipped as package data (loaded once)."""
        return _published()

    def for_region(self, kind: Kind, region: str) -> tuple[x509.Certificate, ...]:
        return self._table[kind].get(region, ())

    def regions(self, kind: Kind) -> tuple[str, ...]:
        return tuple(sorted(self._table[kind]))

    def with_extra(
        self, kind: Kind, region: str, certs: Iterable[x509.Certificate]
    ) -> AwsCertificates:
        """A copy with ``certs`` added to ``region``'s certificates of ``kind``."""
        added = tuple(certs)
        for cert in added:
            check_key(kind, cert, f"extra {kind} certificate for {region}")
        table = {k: dict(v) for k, v in self._table.items()}
        table[kind][region] = table[kind].get(region, ()) + added
        return AwsCertificates(table)


@cache
def _published() -> AwsCertificates:
    root = resources.files(_PACKAGE).joinpath("certs")
    table: dict[Kind, dict[str, tuple[x509.Certificate, ...]]] = {}
    for kind in KINDS:
        table[kind] = {}
        for entry in root.joinpath(kind).iterdir():
            if entry.name.endswith(".pem"):
                region = entry.name.removesuffix(".pem")
                where = f"{_PACKAGE} certs/{kind}/{entry.name}"
                table[kind][region] = load_pem_file(entry.read_bytes(), kind, where)
    return AwsCertificates(table)
