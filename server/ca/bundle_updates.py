"""Pure edits of the stored bundle blob, run inside ``CAStore.update_bundle`` callbacks.

Each returns the stored bytes unchanged when there is nothing to do, so the sequence number
only moves when the authorities do.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from cryptography import x509

from plastron.errors import FailedPrecondition, InvalidBundle
from plastron.spiffe.bundle import Bundle, JwtAuthority
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
