"""Pure edits of the stored bundle blob, run inside ``CAStore.update_bundle`` callbacks.

Each returns the stored bytes unchanged when there is nothing to do, so the sequence number
only moves when the authorities do.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from cryptography import x509

from plastron.errors import FailedPrecondition, InvalidArgument, InvalidBundle, NotFound
from plastron.spiffe.bundle import Bundle, JwtAuthority, X509Authority
from plastron.spiffe.ids import TrustDomain

log = logging.getLogger(__name__)


def load(data: bytes | None, td: TrustDomain) -> Bundle:
    if data is None:
        return Bundle(trust_domain=td)
    bundle = Bundle.from_json(data)
    if bundle.trust_domain != td:
        raise InvalidBundle(f"stored bundle is for {bundle.trust_domain}, expected {td}")
    return bundle


def add(
    data: bytes | None,
    td: TrustDomain,
    *,
    x509_certs: Sequence[x509.Certificate] = (),
    jwt: Sequence[JwtAuthority] = (),
) -> bytes:
    bundle = load(data, td)
    before = bundle
    for cert in x509_certs:
        bundle = bundle.with_x509_authority(cert)
    for authority in jwt:
        bundle = bundle.with_jwt_authority(authority)
    if bundle is before and data is not None:
        return data
    return bundle.to_json()


def prune(data: bytes | None, td: TrustDomain, cutoff: dt.datetime) -> bytes:
    bundle = load(data, td)
    try:
        pruned = bundle.prune(cutoff)
    except FailedPrecondition as exc:
        log.warning("bundle prune skipped: %s", exc)
        pruned = bundle
    if pruned is bundle and data is not None:
        return data
    return pruned.to_json()


def has_x509(data: bytes | None, td: TrustDomain, cert: x509.Certificate) -> bool:
    return data is not None and cert in load(data, td).x509_certificates()


def has_jwt(data: bytes | None, td: TrustDomain, kid: str) -> bool:
    return data is not None and kid in load(data, td).jwt_keys()


# -- taint and revoke (the LocalAuthority API), with SPIRE's datastore messages ---------------


def taint_x509(data: bytes | None, td: TrustDomain, authority_id: str) -> bytes:
    """Mark the X.509 authority whose SKID is ``authority_id`` tainted."""
    bundle = load(data, td)
    found = [a for a in bundle.x509_authorities if a.authority_id == authority_id]
    if not found:
        raise NotFound(f"no ca found with provided subject key ID {authority_id!r}")
    if all(a.tainted for a in found):
        raise InvalidArgument(f"root CA {authority_id!r} is already tainted")
    return bundle.taint_x509_authority(authority_id).to_json()


def revoke_x509(data: bytes | None, td: TrustDomain, authority_id: str) -> bytes:
    """Remove the tainted X.509 authority ``authority_id`` from the bundle."""
    bundle = load(data, td)
    found = [a for a in bundle.x509_authorities if a.authority_id == authority_id]
    if not found:
        raise NotFound(f"no root CA found with provided subject key ID {authority_id!r}")
    if not all(a.tainted for a in found):
        raise FailedPrecondition(
            f"it is not possible to revoke an untainted root CA ({authority_id}); taint it first"
        )
    return bundle.without_x509_authority(authority_id).to_json()


def taint_jwt(data: bytes | None, td: TrustDomain, key_id: str) -> bytes:
    bundle = load(data, td)
    found = [a for a in bundle.jwt_authorities if a.key_id == key_id]
    if not found:
        raise NotFound(f"no JWT Key found with provided key ID {key_id!r}")
    if found[0].tainted:
        raise InvalidArgument(f"key {key_id!r} is already tainted")
    return bundle.taint_jwt_authority(key_id).to_json()


def revoke_jwt(data: bytes | None, td: TrustDomain, key_id: str) -> bytes:
    bundle = load(data, td)
    found = [a for a in bundle.jwt_authorities if a.key_id == key_id]
    if not found:
        raise NotFound(f"no JWT Key found with provided key ID {key_id!r}")
    if not found[0].tainted:
        raise FailedPrecondition(
            f"it is not possible to revoke an untainted key ({key_id}); taint it first"
        )
    return bundle.without_jwt_authority(key_id).to_json()


def x509_authority(data: bytes | None, td: TrustDomain, authority_id: str) -> X509Authority | None:
    for authority in load(data, td).x509_authorities:
        if authority.authority_id == authority_id:
            return authority
    return None
