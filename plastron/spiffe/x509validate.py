"""Validating an X509-SVID chain per the spec: the leaf's and the signing certificates' rules,
their validity at the given time, and the RFC 5280 path to one of the trust domain's
authorities.

Spec: spiffe/spiffe standards/X509-SVID.md.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509 import verification

from plastron.clock import as_utc
from plastron.errors import InvalidSvid
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.x509certs import (
    MAX_CHAIN_CERTS,
    describe_certificate,
    spiffe_id_from_certificate,
)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _check_leaf(leaf: x509.Certificate) -> SpiffeId:
    sid = spiffe_id_from_certificate(leaf)
    if not sid.path:
        raise InvalidSvid(f"leaf SPIFFE ID {sid} has no path; leaf SVIDs must name a workload")
    bc = _basic_constraints(leaf)
    if bc is not None and bc.ca:
        raise InvalidSvid(f"leaf certificate for {sid} must not have the CA flag set")
    ku = _key_usage(leaf)
    if ku is None or not ku.digital_signature:
        raise InvalidSvid(f"leaf certificate for {sid} must have 'digitalSignature' key usage")
    if ku.key_cert_sign:
        raise InvalidSvid(f"leaf certificate for {sid} must not have 'keyCertSign' key usage")
    if ku.crl_sign:
        raise InvalidSvid(f"leaf certificate for {sid} must not have 'cRLSign' key usage")
    return sid


def _check_signing_cert(cert: x509.Certificate, sid: SpiffeId) -> None:
    bc = _basic_constraints(cert)
    if bc is None or not bc.ca:
        raise InvalidSvid(
            f"intermediate certificate in the chain for {sid} is not a CA "
            f"({describe_certificate(cert)})"
        )
    ku = _key_usage(cert)
    if ku is None or not ku.key_cert_sign:
        raise InvalidSvid(
            f"intermediate certificate in the chain for {sid} lacks 'keyCertSign' "
            f"({describe_certificate(cert)})"
        )


def _check_validity(cert: x509.Certificate, now: _dt.datetime, sid: SpiffeId, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise InvalidSvid(
            f"{what} in the chain for {sid} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()} ({describe_certificate(cert)})"
        )
    if now > cert.not_valid_after_utc:
        raise InvalidSvid(
            f"{what} in the chain for {sid} expired at {cert.not_valid_after_utc.isoformat()} "
            f"({describe_certificate(cert)})"
        )


def _spiffe_verifier(
    authorities: Sequence[x509.Certificate], now: _dt.datetime
) -> verification.ClientVerifier:
    # SVIDs carry no DNS SAN and SPIRE's leaf KU includes keyEncipherment, which the web-PKI leaf
    # policy would refuse: the leaf rules are ours (_check_leaf); RFC 5280 path rules stay on.
    ee_policy = verification.ExtensionPolicy.permit_all()
    ca_policy = verification.ExtensionPolicy.webpki_defaults_ca()
    return (
        verification.PolicyBuilder()
        .store(verification.Store(list(authorities)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_CERTS)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )


def validate_x509_svid(
    chain: Sequence[x509.Certificate],
    authorities: Sequence[x509.Certificate],
    now: _dt.datetime,
) -> SpiffeId:
    """Validate ``chain`` (leaf first) against ``authorities``; return the leaf's SPIFFE ID.

    ``authorities`` are the X.509 authorities of the leaf's trust domain (the caller picks the
    bundle by the ID's trust domain, as go-spiffe does).
    """
    now = as_utc(now, "now")
    if not chain:
        raise InvalidSvid("X509-SVID chain is empty")
    if len(chain) > MAX_CHAIN_CERTS:
        raise InvalidSvid(f"X509-SVID chain has {len(chain)} certificates; limit {MAX_CHAIN_CERTS}")
    sid = _check_leaf(chain[0])
    for cert in chain[1:]:
        _check_signing_cert(cert, sid)
    if not authorities:
        raise InvalidSvid(f"no X.509 authorities to validate {sid} against")
    _check_validity(chain[0], now, sid, "leaf certificate")
    for cert in chain[1:]:
        _check_validity(cert, now, sid, "intermediate certificate")
    try:
        verifier = _spiffe_verifier(authorities, now)
        verifier.verify(chain[0], list(chain[1:]))
    except verification.VerificationError as exc:
        raise InvalidSvid(
            f"X509-SVID {sid} does not chain to a trusted authority of {sid.trust_domain} "
            f"({describe_certificate(chain[0])}): {exc}"
        ) from exc
    except ValueError as exc:
        raise InvalidSvid(f"X509-SVID {sid} could not be path-validated: {exc}") from exc
    return sid
