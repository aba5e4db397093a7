"""The UpstreamAuthority plugin protocol (SPIRE's ``UpstreamAuthority``).

With an UpstreamAuthority the server CA is no longer self-signed: at every X.509 rotation the
CA manager generates the next CA key in its KeyManager, builds a CSR signed by that key, and
calls ``mint_x509_ca(csr, ttl)``. The plugin returns

- ``chain``: the new CA certificate first, then any upstream intermediates, never the root;
  the CA sends ``chain`` after each SVID it signs;
- ``roots``: the upstream trust anchors; these (not the new intermediate) go into the trust
  bundle, so SVIDs chain to a root that outlives each rotation.

An implementation must verify the CSR signature, put the trust domain's SPIFFE ID
(``spiffe://<td>``) as the only URI SAN, set ``cA=true`` with keyCertSign/cRLSign, never
issue past its own notAfter, and may shorten ``ttl``. ``publish_jwt_key`` hands the next JWT
public key upstream (nested deployments) and returns the upstream's full JWT key set, which
is added to the bundle; a plugin that has no JWT side raises ``UpstreamUnsupported`` and the
server keeps its own key.

Implementations: ``disk`` (``plastron.server.upstream``) and ``pkcs11`` (``plastron.hsm``; the
HSM holds the root). Both are async because an upstream may be remote or blocking; a blocking
one runs its work in an executor itself. The protocol lives in core so that any room may
implement it; the server is its only caller.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from cryptography import x509

from plastron.errors import FailedPrecondition
from plastron.spiffe.bundle import Bundle, JwtAuthority


class UpstreamUnsupported(FailedPrecondition):
    """The upstream does not offer this operation (e.g. ``disk`` has no JWT side)."""


@runtime_checkable
class UpstreamAuthority(Protocol):
    async def mint_x509_ca(
        self, csr: x509.CertificateSigningRequest, ttl: dt.timedelta
    ) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        """Sign ``csr`` as an intermediate CA; return ``(chain, roots)`` (see module doc)."""
        ...

    async def publish_jwt_key(self, key: JwtAuthority) -> list[JwtAuthority]:
        """Publish ``key`` upstream; return every JWT key the upstream now vouches for."""
        ...


@runtime_checkable
class UpstreamBundleSource(Protocol):
    """An upstream of the same trust domain whose bundle a nested server follows (``spire``):
    new roots, other servers' JWT keys, and taints and revocations made upstream."""

    async def fetch_bundle(self) -> Bundle:
        """The upstream's current trust bundle."""
        ...
