"""Offline verification of an EC2 instance identity document, with an explicit clock.

:func:`verify` checks every signature it is given (at least one) against AWS's certificates
for the document's region and returns the document's claims; anything wrong raises one
AttestationFailed naming the rule. Time checks, each with ``leeway`` (at most
:data:`MAX_LEEWAY`) for clock skew:

- the certificate that verifies must be valid at ``now`` (AWS's ``rsa`` certificates expire:
  a document signed with a retired key is refused);
- ``pendingTime`` (when the instance last started) must not be after ``now``;
- a CMS ``signingTime`` must not be after ``now``, must fall inside the certificate's validity
  and must not precede ``pendingTime`` (the signature covers it, so it cannot be older).

The document itself does not expire: an instance keeps it for its lifetime, which is why the
server attestor trusts it only on first use.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import string

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from plastron.attestors.aws_iid.certificates import AwsCertificates, Kind
from plastron.attestors.aws_iid.cms import CmsKind, verify_signed_data
from plastron.attestors.aws_iid.document import NAME, IdentityDocument, parse_document
from plastron.errors import AttestationFailed

DEFAULT_LEEWAY = dt.timedelta(minutes=5)
MAX_LEEWAY = dt.timedelta(hours=1)
MAX_SIGNATURE_CHARS = 16 * 1024
_WHITESPACE = str.maketrans("", "", string.whitespace)
# signature name (as the metadata service and SPIRE's payload call it) -> certificate kind
SIGNATURE_KINDS: dict[str, Kind] = {"rsa2048": "rsa2048", "signature": "rsa", "pkcs7": "dsa"}


def verify(
    document: bytes,
    *,
    rsa2048: str | None = None,
    signature: str | None = None,
    pkcs7: str | None = None,
    now: dt.datetime,
    certificates: AwsCertificates | None = None,
    leeway: dt.timedelta = DEFAULT_LEEWAY,
) -> IdentityDocument:
    """Verify ``document`` (the exact bytes the metadata service served) with each signature
    given, as served (base64): ``rsa2048`` (CMS, RSA-2048/SHA-256), ``signature`` (raw RSA
    PKCS#1 v1.5/SHA-256) and ``pkcs7`` (CMS, DSA/SHA-1). ``certificates`` defaults to AWS's
    published ones. Returns the claims; raises AttestationFailed."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not dt.timedelta(0) <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY}")
    offered = {"rsa2048": rsa2048, "signature": signature, "pkcs7": pkcs7}
    given = {name: value for name, value in offered.items() if value is not None}
    if not given:
        raise AttestationFailed(f"{NAME}: no signature to verify the document with")
    unverified = parse_document(document)  # its region picks the certificates
    table = certificates if certificates is not None else AwsCertificates.published()
    for name, value in given.items():
        _verify_one(name, value, document, unverified, table, now=now, leeway=leeway)
    return parse_document(document, verified_by=tuple(given))


def _verify_one(
    name: str,
    value: str,
    document: bytes,
    doc: IdentityDocument,
    table: AwsCertificates,
    *,
    now: dt.datetime,
    leeway: dt.timedelta,
) -> None:
    kind = SIGNATURE_KINDS[name]
    what = f"{NAME}: {name}"
    certs = table.for_region(kind, doc.region)
    if not certs:
        raise AttestationFailed(
            f"{what}: no {kind} certificate is known for region {doc.region!r} "
            "(add one with extra_certificates if AWS opened the region after this release)"
        )
    blob = _base64(value, what)
    if name == "signature":
        cert = _verify_raw(blob, document, certs, what)
        signing_time = None
    else:
        cms_kind: CmsKind = "rsa2048" if kind == "rsa2048" else "dsa"
        signed = verify_signed_data(blob, kind=cms_kind, certificates=certs, what=what)
        if signed.content != document:
            raise AttestationFailed(
                f"{what}: the signed content is not the presented document "
                f"({len(signed.content)} signed bytes, {len(document)} presented)"
            )
        cert, signing_time = signed.certificate, signed.signing_time
    _check_times(cert, signing_time, doc.pending_time, now=now, leeway=leeway, what=what)


def _base64(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise AttestationFailed(f"{what} must be a non-empty base64 string")
    if len(value) > MAX_SIGNATURE_CHARS:
        raise AttestationFailed(f"{what} is longer than {MAX_SIGNATURE_CHARS} characters")
    if value.lstrip().startswith("-----BEGIN"):
        raise AttestationFailed(f"{what} must be the base64 body as served, without PEM armour")
    try:
        return base64.b64decode(value.translate(_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        raise AttestationFailed(f"{what} is not valid base64") from None


def _verify_raw(
    sig: bytes, document: bytes, certs: tuple[x509.Certificate, ...], what: str
) -> x509.Certificate:
    for cert in certs:
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey)  # AwsCertificates checks the key type
        if len(sig) != (key.key_size + 7) // 8:
            continue
        try:
            key.verify(sig, document, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return cert
    raise AttestationFailed(
        f"{what}: the signature does not verify with any of the {len(certs)} rsa "
        "certificate(s) for this region"
    )


def _check_times(
    cert: x509.Certificate,
    signing_time: dt.datetime | None,
    pending_time: dt.datetime,
    *,
    now: dt.datetime,
    leeway: dt.timedelta,
    what: str,
) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    serial = f"serial {cert.serial_number:x}"
    if now + leeway < start:
        raise AttestationFailed(
            f"{what}: the AWS certificate ({serial}) is not valid before {start.isoformat()}"
        )
    if now - leeway > end:
        raise AttestationFailed(
            f"{what}: the AWS certificate ({serial}) expired at {end.isoformat()}"
        )
    if pending_time > now + leeway:
        raise AttestationFailed(
            f"{NAME}: instance identity document pendingTime {pending_time.isoformat()} is "
            f"after now ({now.isoformat()})"
        )
    if signing_time is None:
        return
    if signing_time > now + leeway:
        raise AttestationFailed(
            f"{what}: signingTime {signing_time.isoformat()} is after now ({now.isoformat()})"
        )
    if not start - leeway <= signing_time <= end + leeway:
        raise AttestationFailed(
            f"{what}: signingTime {signing_time.isoformat()} is outside the certificate's "
            f"validity ({start.isoformat()} to {end.isoformat()})"
        )
    if signing_time + leeway < pending_time:
        raise AttestationFailed(
            f"{what}: signingTime {signing_time.isoformat()} precedes the document's "
            f"pendingTime {pending_time.isoformat()}"
        )
