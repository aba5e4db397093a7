"""SPIRE's leaf X509-SVID, assembled as DER from parts made once per issuer.

``CertificateBuilder`` rebuilds and re-encodes every extension of every certificate and calls
back into Python for the signature; for a leaf whose only per-SVID parts are the serial, the
validity, the subject, the key, the SAN and the SKID, it costs more than the HSM's signature
(docs/hsm.md). So the per-issuer parts (signature algorithm, issuer name, basic constraints,
key usage, EKU, AKID) are encoded once per issuer and the rest is encoded here, in DER (X.690),
with the field order and encodings ``CertificateBuilder`` uses: the tests hold the two to the
same bytes for every key type. The certificate is parsed back before it is returned, so a
malformed encoding fails loudly rather than reaching a workload.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from plastron.errors import InvalidSvid
from plastron.keymanager import PrivateKey, PublicKey
from plastron.wire.keys import spki_der

_SEQUENCE = 0x30
_INTEGER = 0x02
_BIT_STRING = 0x03
_OCTET_STRING = 0x04
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_SAN_URI = 0x86  # GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
_SAN_DNS = 0x82  # GeneralName dNSName [2] IMPLICIT IA5String
_VERSION_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_CRITICAL = bytes.fromhex("0101ff")  # BOOLEAN TRUE; FALSE is the DEFAULT, so DER omits it

_ECDSA_OIDS = {
    "sha256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}
_RSA_PKCS1_OIDS = {
    "sha256": SignatureAlgorithmOID.RSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.RSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.RSA_WITH_SHA512,
}
_DER_NULL = bytes.fromhex("0500")


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    return bytes((tag,)) + _length(len(body)) + body


def der_oid(oid: ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:  # base 128, high bit set on all but the last octet
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def der_positive_integer(value: int) -> bytes:
    # one octet more than whole octets of bits: the leading 0x00 keeps a set top bit positive
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_time(when: _dt.datetime) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds."""
    when = when.astimezone(_dt.UTC)
    if 1950 <= when.year < 2050:
        return tlv(_UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(_GENERALIZED_TIME, f"{when.year:04d}{when:%m%d%H%M%S}Z".encode("ascii"))


@functools.lru_cache(maxsize=64)
def der_validity(not_before: _dt.datetime, not_after: _dt.datetime) -> bytes:
    """Validity; a batch's leaves share theirs, so it is encoded once per batch."""
    return tlv(_SEQUENCE, der_time(not_before) + der_time(not_after))


def der_extension(oid: ObjectIdentifier, critical: bool, value: bytes) -> bytes:
    flag = _CRITICAL if critical else b""
    return tlv(_SEQUENCE, der_oid(oid) + flag + tlv(_OCTET_STRING, value))


def der_header(data: bytes, offset: int, what: str = "DER element") -> tuple[int, int, int]:
    """(tag, contents start, contents length) of the DER element at ``offset``; the contents
    themselves may still run past ``data`` (callers bound them). ``what`` names it in errors."""
    if len(data) - offset < 2:
        raise InvalidSvid(f"{what}: truncated at byte {offset}")
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, first
    count = first & 0x7F
    if count == 0 or count > 3:  # indefinite, or 16 MiB and more: never a certificate part
        raise InvalidSvid(f"{what}: unsupported length encoding at byte {offset}")
    start = offset + 2 + count
    if start > len(data):
        raise InvalidSvid(f"{what}: truncated length at byte {offset}")
    return tag, start, int.from_bytes(data[offset + 2 : start], "big")


def _read_header(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, contents start, contents end) of the DER element at ``offset``, within ``data``."""
    tag, start, size = der_header(data, offset)
    if start + size > len(data):
        raise InvalidSvid(f"DER element at byte {offset} runs past the end of its data")
    return tag, start, start + size


def subject_key_id(spki_der: bytes) -> bytes:
    """RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bits."""
    _, body, _ = _read_header(spki_der, 0)
    _, _, algorithm_end = _read_header(spki_der, body)
    tag, bits, end = _read_header(spki_der, algorithm_end)
    if tag != _BIT_STRING or end == bits:
        raise InvalidSvid("SubjectPublicKeyInfo has no subjectPublicKey BIT STRING")
    return hashlib.sha1(spki_der[bits + 1 : end], usedforsecurity=False).digest()


@dataclass(frozen=True)
class LeafTemplate:
    """The parts of a leaf's TBSCertificate that depend only on its issuer and signing key."""

    signature_algorithm: bytes  # AlgorithmIdentifier, in the TBS and after it
    issuer_name: bytes  # the issuer certificate's subject, as encoded there
    before_san: bytes  # basic constraints, key usage, EKU
    after_ski: bytes  # authority key identifier
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512
    is_rsa: bool

    def sign_der(
        self,
        *,
        key: PrivateKey,
        serial: int,
        not_before: _dt.datetime,
        not_after: _dt.datetime,
        subject_der: bytes,
        public_key: PublicKey,
        sans: tuple[str, Sequence[str]],
        san_critical: bool,
    ) -> bytes:
        """One signed leaf's DER; ``sans`` is (the SPIFFE ID, the DNS names), already checked."""
        spki = spki_der(public_key)
        uri, dns_names = sans
        general_names = tlv(_SAN_URI, uri.encode("ascii"))
        if dns_names:
            general_names += b"".join(tlv(_SAN_DNS, name.encode("ascii")) for name in dns_names)
        san_value = tlv(_OCTET_STRING, tlv(_SEQUENCE, general_names))
        extensions = (
            self.before_san
            + tlv(_SEQUENCE, _SAN_OID + (_CRITICAL if san_critical else b"") + san_value)
            + _SKI_PREFIX
            + subject_key_id(spki)
            + self.after_ski
        )
        tbs = tlv(
            _SEQUENCE,
            _VERSION_3
            + der_positive_integer(serial)
            + self.signature_algorithm
            + self.issuer_name
            + der_validity(not_before, not_after)
            + subject_der
            + spki
            + tlv(0xA3, tlv(_SEQUENCE, extensions)),
        )
        if self.is_rsa:
            assert isinstance(key, rsa.RSAPrivateKey)
            signature = key.sign(tbs, _PKCS1V15, self.hash_algorithm)
        else:
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            signature = key.sign(tbs, self._ecdsa)
        return tlv(
            _SEQUENCE,
            tbs + self.signature_algorithm + tlv(_BIT_STRING, b"\x00" + signature),
        )

    @functools.cached_property
    def _ecdsa(self) -> ec.ECDSA:
        return ec.ECDSA(self.hash_algorithm)


# The SKID extension up to the SHA-1 itself (always 20 bytes, so every length is constant):
# SEQUENCE { OID, OCTET STRING { OCTET STRING (20) } }.
_SKI_PREFIX = (
    bytes.fromhex("301d") + der_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER) + bytes.fromhex("04160414")
)
_SAN_OID = der_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
_PKCS1V15 = padding.PKCS1v15()


def _signature_algorithm(
    key: PrivateKey, hash_algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bool]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        oid = _ECDSA_OIDS.get(hash_algorithm.name)
        if oid is not None:
            return tlv(_SEQUENCE, der_oid(oid)), False  # RFC 5758: no parameters
    elif isinstance(key, rsa.RSAPrivateKey):
        oid = _RSA_PKCS1_OIDS.get(hash_algorithm.name)
        if oid is not None:
            return tlv(_SEQUENCE, der_oid(oid) + _DER_NULL), True  # RFC 4055: NULL parameters
    raise InvalidSvid(
        f"cannot sign X509-SVIDs with a {type(key).__name__} and {hash_algorithm.name}"
    )


def _issuer_subject_der(issuer: x509.Certificate) -> bytes:
    """The issuer's subject Name exactly as its certificate encodes it (RFC 5280 §4.1.2.4)."""
    tbs = issuer.tbs_certificate_bytes
    _, offset, end = _read_header(tbs, 0)
    spans: list[tuple[int, int, int]] = []  # (tag, start, end) of the TBS's first six fields
    while offset < end and len(spans) < 6:
        tag, _, after = _read_header(tbs, offset)
        spans.append((tag, offset, after))
        offset = after
    if spans and spans[0][0] == 0xA0:  # the explicit version, absent from v1 certificates
        spans.pop(0)
    if len(spans) < 5 or spans[4][0] != _SEQUENCE:
        raise InvalidSvid("the issuer certificate's TBSCertificate has no subject Name")
    _, start, after = spans[4]  # serial, signature, issuer, validity, subject
    return tbs[start:after]


def make_leaf_template(
    issuer: x509.Certificate,
    key: PrivateKey,
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512,
    authority_key_id: x509.AuthorityKeyIdentifier,
) -> LeafTemplate:
    algorithm, is_rsa = _signature_algorithm(key, hash_algorithm)
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    before_san = (
        der_extension(
            ExtensionOID.BASIC_CONSTRAINTS,
            True,
            x509.BasicConstraints(ca=False, path_length=None).public_bytes(),
        )
        + der_extension(ExtensionOID.KEY_USAGE, True, key_usage.public_bytes())
        + der_extension(ExtensionOID.EXTENDED_KEY_USAGE, False, eku.public_bytes())
    )
    after_ski = der_extension(
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, authority_key_id.public_bytes()
    )
    return LeafTemplate(
        signature_algorithm=algorithm,
        issuer_name=_issuer_subject_der(issuer),
        before_san=before_san,
        after_ski=after_ski,
        hash_algorithm=hash_algorithm,
        is_rsa=is_rsa,
    )


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The digest SPIRE pairs with the signing key: SHA-384 for P-384, SHA-512 for P-521."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name == "secp384r1":
            return hashes.SHA384()
        if key.curve.name == "secp521r1":
            return hashes.SHA512()
        return hashes.SHA256()
    return hashes.SHA256()


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        skid = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # An upstream CA without SKID: derive the id the same way we derive our own.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(skid)


_LEAF_TEMPLATES: dict[tuple[x509.Certificate, type], LeafTemplate] = {}
_MAX_LEAF_TEMPLATES = 16
_LAST_LEAF_TEMPLATE: list[tuple[x509.Certificate, type, LeafTemplate] | None] = [None]


def leaf_template(issuer: x509.Certificate, key: PrivateKey) -> LeafTemplate:
    """SPIRE's leaf parts that depend only on the issuer and its key, made once per issuer.

    The issuer fixes the key's algorithm and curve, hence the signature hash; the key's type
    only tells a real key from one that signs elsewhere (HSM)."""
    last = _LAST_LEAF_TEMPLATE[0]
    if last is not None and last[0] is issuer and last[1] is type(key):
        return last[2]  # the same CA object as the last leaf's: no certificate hashing
    cache_key = (issuer, type(key))
    cached = _LEAF_TEMPLATES.get(cache_key)
    if cached is None:
        cached = make_leaf_template(issuer, key, signature_hash(key), authority_key_id(issuer))
        if len(_LEAF_TEMPLATES) >= _MAX_LEAF_TEMPLATES:
            _LEAF_TEMPLATES.clear()  # CAs rotate rarely; a handful of live issuers at most
        _LEAF_TEMPLATES[cache_key] = cached
    _LAST_LEAF_TEMPLATE[0] = (issuer, type(key), cached)  # one tuple, replaced whole
    return cached
