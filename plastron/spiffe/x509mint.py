"""Signing X509-SVID leaves with SPIRE's template, and SPIFFE CA certificates.

Template: SPIRE pkg/server/credtemplate.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID

from plastron.clock import as_utc
from plastron.errors import InvalidSvid
from plastron.keymanager import PrivateKey, PublicKey
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.leaf_der import authority_key_id, leaf_template, signature_hash
from plastron.wire.limits import MAX_DNS_NAME_CHARS, MAX_DNS_NAMES

SERIAL_LIMIT = 1 << 128
MAX_SERIAL = 1 << 159  # 20 octets, positive

_SPIRE_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
    ]
)
_SPIRE_SUBJECT_DER = _SPIRE_SUBJECT.public_bytes()
_EMPTY_NAME_DER = x509.Name([]).public_bytes()

# A CA's key usage: it signs certificates and CRLs, nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def random_serial() -> int:
    """A random serial in [1, 2^128), as SPIRE draws it."""
    return secrets.randbelow(SERIAL_LIMIT - 1) + 1


def _validity(
    not_before: _dt.datetime, not_after: _dt.datetime, issuer: x509.Certificate | None
) -> tuple[_dt.datetime, _dt.datetime]:
    start = as_utc(not_before, "not_before")
    end = as_utc(not_after, "not_after")
    if issuer is not None:
        end = min(end, issuer.not_valid_after_utc)
    if end <= start:
        raise InvalidSvid(
            f"certificate validity is empty: not_before={start.isoformat()} "
            f"not_after={end.isoformat()} (not_after is clamped to the issuer's expiry)"
        )
    return start, end


def make_x509_svid(
    *,
    spiffe_id: SpiffeId,
    public_key: PublicKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    dns_names: Sequence[str] = (),
    subject: x509.Name | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Sign a leaf X509-SVID with SPIRE's template; not_after is clamped to the issuer's. The
    leaf is parsed back: a guard against the DER encoder's own bugs, which a caller that only
    passes the DER on (:func:`make_x509_svid_der`, a batch) leaves to the encoder's tests."""
    der = make_x509_svid_der(
        spiffe_id=spiffe_id,
        public_key=public_key,
        issuer=issuer,
        issuer_key=issuer_key,
        not_before=not_before,
        not_after=not_after,
        dns_names=dns_names,
        subject=subject,
        serial=serial,
    )
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:  # our encoder's bug, never the caller's input
        raise InvalidSvid(f"the assembled leaf certificate does not parse: {exc}") from exc


def make_x509_svid_der(
    *,
    spiffe_id: SpiffeId,
    public_key: PublicKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    dns_names: Sequence[str] = (),
    subject: x509.Name | None = None,
    serial: int | None = None,
) -> bytes:
    """:func:`make_x509_svid`'s leaf as DER, not parsed back."""
    if not spiffe_id.path:
        raise InvalidSvid(f"an X509-SVID leaf needs a SPIFFE ID with a path (got {spiffe_id})")
    if len(dns_names) > MAX_DNS_NAMES:
        raise InvalidSvid(f"{len(dns_names)} DNS names exceed the limit of {MAX_DNS_NAMES}")
    for name in dns_names:
        # DNS SANs are IA5String: ASCII only (IDNs arrive as A-labels).
        if (
            not name
            or len(name) > MAX_DNS_NAME_CHARS
            or not name.isascii()
            or not name.isprintable()
        ):
            raise InvalidSvid(
                f"DNS name {name[:64]!r} is not a printable ASCII name of "
                f"1..{MAX_DNS_NAME_CHARS} chars"
            )
    if serial is not None and not 0 < serial < MAX_SERIAL:
        raise InvalidSvid(f"serial number {serial} is outside 1..2^159-1 (RFC 5280 §4.1.2.2)")
    start, end = _validity(not_before, not_after, issuer)
    if subject is None:
        subject_der = _SPIRE_SUBJECT_DER
        if dns_names:
            subject_der = x509.Name(
                [*_SPIRE_SUBJECT, x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]
            ).public_bytes()
    else:
        subject_der = subject.public_bytes()
    return leaf_template(issuer, issuer_key).sign_der(
        key=issuer_key,
        serial=serial if serial is not None else random_serial(),
        not_before=start,
        not_after=end,
        subject_der=subject_der,
        public_key=public_key,
        # SPIFFE IDs are ASCII by the ID spec; DNS names were checked above
        sans=(str(spiffe_id), dns_names),
        # The spec: the SAN extension is critical when the subject is empty.
        san_critical=subject_der == _EMPTY_NAME_DER,
    )


def make_ca_certificate(
    *,
    trust_domain: TrustDomain,
    public_key: PublicKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    subject: x509.Name | None = None,
    serial: int | None = None,
    path_len: int | None = None,
) -> x509.Certificate:
    """Sign a CA certificate for ``trust_domain``; ``issuer=None`` makes it self-signed."""
    start, end = _validity(not_before, not_after, issuer)
    serial = serial if serial is not None else random_serial()
    if subject is None:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial)),
            ]
        )
    if issuer is None:
        akid = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
        issuer_name = subject
    else:
        akid = authority_key_id(issuer)
        issuer_name = issuer.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=len(subject) == 0,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(akid, critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))
