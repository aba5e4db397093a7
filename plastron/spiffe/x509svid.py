"""X509-SVIDs: build them with SPIRE's template, carry them, and validate them per the spec.

Spec: spiffe/spiffe standards/X509-SVID.md. Template: SPIRE pkg/server/credtemplate.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from plastron.errors import FailedPrecondition, InvalidSpiffeId, InvalidSvid
from plastron.keymanager import PrivateKey, PublicKey
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.leaf_der import (
    authority_key_id,
    der_header,
    leaf_template,
    signature_hash,
)
from plastron.wire.keys import spki_der
from plastron.wire.limits import MAX_DNS_NAME_CHARS, MAX_DNS_NAMES

MAX_CHAIN_CERTS = 16
MAX_CERT_DER_BYTES = 64 * 1024
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


def _utc(when: _dt.datetime, name: str) -> _dt.datetime:
    if when.tzinfo is _dt.UTC:  # the server's clock: astimezone() costs a few µs per leaf
        return when
    if when.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {when.isoformat()})")
    return when.astimezone(_dt.UTC)


def random_serial() -> int:
    """A random serial in [1, 2^128), as SPIRE draws it."""
    return secrets.randbelow(SERIAL_LIMIT - 1) + 1


def _validity(
    not_before: _dt.datetime, not_after: _dt.datetime, issuer: x509.Certificate | None
) -> tuple[_dt.datetime, _dt.datetime]:
    start = _utc(not_before, "not_before")
    end = _utc(not_after, "not_after")
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
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id))]),
            critical=len(subject) == 0,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(akid, critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


@dataclass(frozen=True)
class X509Svid:
    """An X509-SVID: its ID, the chain (leaf first) and, when we hold it, the private key."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise InvalidSvid(f"X509-SVID for {self.spiffe_id} has an empty certificate chain")
        if not isinstance(self.chain, tuple):
            object.__setattr__(self, "chain", tuple(self.chain))
        leaf_id = spiffe_id_from_certificate(self.chain[0])
        if leaf_id != self.spiffe_id:
            raise InvalidSvid(f"leaf certificate is for {leaf_id}, not {self.spiffe_id}")

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def expires_at(self) -> _dt.datetime:
        return self.leaf.not_valid_after_utc

    def chain_der(self) -> bytes:
        """The chain as concatenated DER, as the Workload API and SPIRE's types carry it."""
        return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in self.chain)

    def key_pkcs8_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER (Workload API ``x509_svid_key``)."""
        if self.private_key is None:
            raise FailedPrecondition(f"X509-SVID for {self.spiffe_id} carries no private key")
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_der(cls, chain_der: bytes, key_der: bytes | None = None) -> X509Svid:
        """Parse a DER chain and optional PKCS#8 key; the key must match the leaf."""
        chain = parse_der_chain(chain_der)
        key: PrivateKey | None = None
        if key_der is not None:
            key = _load_pkcs8(key_der)
            if not _same_public_key(key.public_key(), chain[0].public_key()):
                raise InvalidSvid("X509-SVID private key does not match the leaf certificate")
        return cls(spiffe_id_from_certificate(chain[0]), tuple(chain), key)


def _load_pkcs8(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidSvid("X509-SVID private key is not an unencrypted PKCS#8 DER key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidSvid(f"X509-SVID private key type {type(key).__name__} is not EC or RSA")
    return key


def _same_public_key(a: object, b: object) -> bool:
    if not isinstance(a, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    if not isinstance(b, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    return spki_der(a) == spki_der(b)


def _describe(cert: x509.Certificate) -> str:
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError:
        subject = "<unparsable>"
    return f"subject={subject!r} serial={cert.serial_number:x}"


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in the certificate's single URI SAN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidSvid(
            f"certificate has no subjectAltName extension ({_describe(cert)})"
        ) from None
    except ValueError as exc:
        raise InvalidSvid(f"certificate extensions cannot be parsed ({_describe(cert)})") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise InvalidSvid(
            f"certificate must carry exactly one URI SAN, found {len(uris)} ({_describe(cert)})"
        )
    try:
        return SpiffeId.parse(uris[0])
    except InvalidSpiffeId as exc:
        raise InvalidSvid(f"certificate URI SAN is not a valid SPIFFE ID: {exc}") from exc


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
            f"intermediate certificate in the chain for {sid} is not a CA ({_describe(cert)})"
        )
    ku = _key_usage(cert)
    if ku is None or not ku.key_cert_sign:
        raise InvalidSvid(
            f"intermediate certificate in the chain for {sid} lacks 'keyCertSign' "
            f"({_describe(cert)})"
        )


def _check_validity(cert: x509.Certificate, now: _dt.datetime, sid: SpiffeId, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise InvalidSvid(
            f"{what} in the chain for {sid} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()} ({_describe(cert)})"
        )
    if now > cert.not_valid_after_utc:
        raise InvalidSvid(
            f"{what} in the chain for {sid} expired at {cert.not_valid_after_utc.isoformat()} "
            f"({_describe(cert)})"
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
    now = _utc(now, "now")
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
            f"({_describe(chain[0])}): {exc}"
        ) from exc
    except ValueError as exc:
        raise InvalidSvid(f"X509-SVID {sid} could not be path-validated: {exc}") from exc
    return sid


def _der_length(data: bytes, offset: int) -> int:
    """Total length (header + body) of the DER SEQUENCE starting at ``offset``."""
    if len(data) - offset < 2 or data[offset] != 0x30:
        raise InvalidSvid(f"DER certificate chain: expected a SEQUENCE at byte {offset}")
    _, start, size = der_header(data, offset, "DER certificate chain")
    return start - offset + size


# What cryptography raises for a certificate or CSR it cannot decode; most of it only when a
# field is first read (InvalidVersion and UnsupportedAlgorithm are not ValueErrors; a name
# attribute of the wrong ASN.1 type is a TypeError).
CERTIFICATE_PARSE_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    UnsupportedAlgorithm,
)


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    """One DER certificate from untrusted bytes, every lazily decoded field read now (so no
    later access can raise); InvalidSvid naming ``what`` if it cannot be decoded."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.extensions, cert.subject, cert.issuer, cert.serial_number)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_hash_algorithm)
        cert.public_key()
    except CERTIFICATE_PARSE_ERRORS as exc:
        raise InvalidSvid(f"{what} cannot be parsed: {exc}") from None
    return cert


def parse_der_chain(data: bytes, *, max_certs: int = MAX_CHAIN_CERTS) -> list[x509.Certificate]:
    """Split concatenated DER certificates (leaf first); bounded in count and size."""
    if not data:
        raise InvalidSvid("DER certificate chain is empty")
    if len(data) > max_certs * MAX_CERT_DER_BYTES:
        raise InvalidSvid(f"DER certificate chain is {len(data)} bytes; too large")
    certs: list[x509.Certificate] = []
    offset = 0
    while offset < len(data):
        if len(certs) == max_certs:
            raise InvalidSvid(f"DER certificate chain holds more than {max_certs} certificates")
        size = _der_length(data, offset)
        if size > MAX_CERT_DER_BYTES:
            raise InvalidSvid(f"DER certificate at byte {offset} is {size} bytes; too large")
        if offset + size > len(data):
            raise InvalidSvid(f"DER certificate chain is truncated at byte {offset}")
        certs.append(
            load_der_certificate(data[offset : offset + size], f"DER certificate at byte {offset}")
        )
        offset += size
    return certs


def certificates_to_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_pem_certificates(
    data: bytes, *, max_certs: int = MAX_CHAIN_CERTS
) -> list[x509.Certificate]:
    """Every certificate in a PEM file; InvalidSvid if there are none or too many."""
    if len(data) > max_certs * MAX_CERT_DER_BYTES * 2:
        raise InvalidSvid(f"PEM data is {len(data)} bytes; too large")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidSvid(f"PEM data holds no parsable certificate: {exc}") from exc
    if len(certs) > max_certs:
        raise InvalidSvid(f"PEM data holds {len(certs)} certificates; limit {max_certs}")
    return certs
