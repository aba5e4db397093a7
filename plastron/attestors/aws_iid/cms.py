"""CMS SignedData (RFC 5652) as AWS signs instance identity documents: ``rsa2048`` (RSA,
SHA-256) and the legacy ``pkcs7`` (DSA, SHA-1).

AWS's blobs are BER with indefinite lengths and a constructed OCTET STRING for the content; they
embed no certificate, so the signer is looked up among the region's certificates by its
issuer and serial number. asn1crypto parses them (BER in, strict about trailing data). The
checks, all required:

- one SignerInfo, identified by issuer and serial number of one of the given certificates;
- the digest and signature algorithms of the kind and the signer's key type, and no other;
- signed attributes present and DER-encoded (what the signature covers is then unambiguous),
  each attribute type once: ``contentType`` = id-data = the encapsulated content's type,
  ``messageDigest`` = the digest of the encapsulated content, ``signingTime`` (optional) and
  ``CMSAlgorithmProtection`` (optional, RFC 6211; must name the same algorithms);
- the signature over the DER of the signed attributes re-tagged as ``SET OF``;
- the content attached (a detached signature proves nothing about the presented document).

The caller compares the content with the document it was given and checks the times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from plastron.errors import AttestationFailed

if TYPE_CHECKING:
    from asn1crypto import cms as asn1_cms
    from asn1crypto import x509 as asn1_x509

CmsKind = Literal["rsa2048", "dsa"]
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_DATA = "1.2.840.113549.1.7.1"
ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5"
ATTR_ALGORITHM_PROTECTION = "1.2.840.113549.1.9.52"
_SINGLE_VALUED = (
    ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME, ATTR_ALGORITHM_PROTECTION,
)  # fmt: skip


SHA1, SHA256 = "1.3.14.3.2.26", "2.16.840.1.101.3.4.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
SHA1_RSA, SHA256_RSA = "1.2.840.113549.1.1.5", "1.2.840.113549.1.1.11"
DSA, SHA1_DSA = "1.2.840.10040.4.1", "1.2.840.10040.4.3"
_HASHES: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    SHA1: ("sha1", hashes.SHA1()),  # noqa: S303 (AWS's legacy pkcs7 form)
    SHA256: ("sha256", hashes.SHA256()),
}
KeyKind = Literal["rsa", "dsa"]
# (kind, signer key type) -> {digest algorithm: the signature algorithms accepted with it}
_ACCEPTED: dict[tuple[CmsKind, KeyKind], dict[str, frozenset[str]]] = {
    ("rsa2048", "rsa"): {SHA256: frozenset({RSA_ENCRYPTION, SHA256_RSA})},
    ("dsa", "dsa"): {SHA1: frozenset({DSA, SHA1_DSA})},
    # AWS's pkcs7 certificates for the China regions hold RSA keys
    ("dsa", "rsa"): {
        SHA1: frozenset({RSA_ENCRYPTION, SHA1_RSA}),
        SHA256: frozenset({RSA_ENCRYPTION, SHA256_RSA}),
    },
}


@dataclass(frozen=True)
class SignedContent:
    """What a verified SignedData proves: its content, signed by ``certificate``."""

    content: bytes
    certificate: x509.Certificate
    signing_time: dt.datetime | None


@dataclass(frozen=True)
class _SignerInfo:
    sid_issuer: asn1_x509.Name | None
    sid_serial: int | None
    digest_algorithm: str
    signature_algorithm: str
    signature_parameters: Any
    attributes: dict[str, list[Any]]
    attributes_der: bytes  # the DER the signature covers
    attributes_as_sent: bytes  # re-tagged as SET OF, else as received
    signature: bytes


@dataclass(frozen=True)
class _SignedData:
    digest_algorithms: frozenset[str]
    content_type: str
    content: bytes | None
    signers: tuple[_SignerInfo, ...]


def verify_signed_data(
    blob: bytes,
    *,
    kind: CmsKind,
    certificates: Sequence[x509.Certificate],
    what: str,
) -> SignedContent:
    """Verify ``blob`` (BER/DER) as a ``kind`` SignedData by one of ``certificates``; the
    content and signer, or AttestationFailed starting with ``what``."""
    parsed = _parse(blob, what)
    if len(parsed.signers) != 1:
        raise AttestationFailed(f"{what}: {len(parsed.signers)} signers; exactly one expected")
    signer = parsed.signers[0]
    cert = _signer_certificate(signer, certificates, what)
    key = cert.public_key()
    key_kind: KeyKind = "dsa" if isinstance(key, dsa.DSAPublicKey) else "rsa"
    hash_algorithm = _check_algorithms(parsed, signer, _ACCEPTED[kind, key_kind], what)
    content = _check_content(parsed, what)
    signing_time = _check_attributes(signer, content, hash_algorithm, what)
    _check_signature(signer, cert, hash_algorithm, what)
    return SignedContent(content, cert, signing_time)


# ---- parsing (every asn1crypto failure becomes one clean refusal) --------------------------


def _parse(blob: bytes, what: str) -> _SignedData:
    # asn1crypto is the [cloud] extra: imported when a document is verified, not when the
    # aws_iid package is (plastron/extras.py)
    from asn1crypto import cms as asn1_cms  # noqa: PLC0415

    try:
        info = asn1_cms.ContentInfo.load(blob, strict=True)
        if info["content_type"].dotted != ID_SIGNED_DATA:
            raise AttestationFailed(
                f"{what}: CMS content type is {info['content_type'].dotted}, not SignedData"
            )
        signed = info["content"]
        encap = signed["encap_content_info"]
        econtent = encap["content"]
        return _SignedData(
            digest_algorithms=frozenset(a["algorithm"].dotted for a in signed["digest_algorithms"]),
            content_type=encap["content_type"].dotted,
            content=None if econtent.native is None else bytes(econtent.native),
            signers=tuple(_parse_signer(s) for s in signed["signer_infos"]),
        )
    except AttestationFailed:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise AttestationFailed(f"{what}: not a valid CMS SignedData ({_short(exc)})") from None


def _parse_signer(info: asn1_cms.SignerInfo) -> _SignerInfo:
    from asn1crypto import cms as asn1_cms  # noqa: PLC0415  # [cloud] extra

    sid = info["sid"]
    issuer = serial = None
    if sid.name == "issuer_and_serial_number":
        issuer, serial = sid.chosen["issuer"], sid.chosen["serial_number"].native
    attrs = info["signed_attrs"]
    attributes: dict[str, list[Any]] = {}
    as_sent = der = b""
    if attrs.native is not None:
        for attr in attrs:
            values = list(attr["values"])
            attributes.setdefault(attr["type"].dotted, []).append(values)
        as_sent = b"\x31" + attrs.dump()[1:]
        der = asn1_cms.CMSAttributes.load(as_sent).dump(force=True)
    return _SignerInfo(
        sid_issuer=issuer,
        sid_serial=serial,
        digest_algorithm=info["digest_algorithm"]["algorithm"].dotted,
        signature_algorithm=info["signature_algorithm"]["algorithm"].dotted,
        signature_parameters=info["signature_algorithm"]["parameters"].native,
        attributes=attributes,
        attributes_der=der,
        attributes_as_sent=as_sent,
        signature=bytes(info["signature"].native),
    )


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


# ---- checks ---------------------------------------------------------------------------------


def _signer_certificate(
    signer: _SignerInfo, certificates: Sequence[x509.Certificate], what: str
) -> x509.Certificate:
    if signer.sid_issuer is None or signer.sid_serial is None:
        raise AttestationFailed(f"{what}: the signer is not identified by issuer and serial number")
    from asn1crypto import x509 as asn1_x509  # noqa: PLC0415  # [cloud] extra

    for cert in certificates:
        tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        tbs_cert = tbs["tbs_certificate"]
        if tbs_cert["serial_number"].native == signer.sid_serial and (
            tbs_cert["issuer"] == signer.sid_issuer
        ):
            return cert
    raise AttestationFailed(
        f"{what}: signed by serial {signer.sid_serial:x} of "
        f"{signer.sid_issuer.human_friendly[:200]!r}, which is not one of the "
        f"{len(certificates)} certificate(s) trusted for this region"
    )


def _check_algorithms(
    parsed: _SignedData, signer: _SignerInfo, accepted: dict[str, frozenset[str]], what: str
) -> hashes.HashAlgorithm:
    signatures = accepted.get(signer.digest_algorithm)
    if signatures is None:
        names = ", ".join(_HASHES[d][0] for d in sorted(accepted))
        raise AttestationFailed(
            f"{what}: digest algorithm {signer.digest_algorithm} is not accepted (expected {names})"
        )
    if signer.digest_algorithm not in parsed.digest_algorithms:
        raise AttestationFailed(f"{what}: the signer's digest algorithm is not listed")
    if signer.signature_algorithm not in signatures:
        raise AttestationFailed(
            f"{what}: signature algorithm {signer.signature_algorithm} is not accepted "
            f"(expected one of {', '.join(sorted(signatures))})"
        )
    if signer.signature_parameters is not None:
        raise AttestationFailed(f"{what}: the signature algorithm carries unexpected parameters")
    return _HASHES[signer.digest_algorithm][1]


def _check_content(parsed: _SignedData, what: str) -> bytes:
    if parsed.content_type != ID_DATA:
        raise AttestationFailed(f"{what}: encapsulated content type is {parsed.content_type}")
    if parsed.content is None:
        raise AttestationFailed(f"{what}: the signature is detached; the content must be in it")
    return parsed.content


def _single(signer: _SignerInfo, oid: str, name: str, what: str) -> Any:
    found = signer.attributes.get(oid)
    if found is None:
        return None
    if len(found) != 1 or len(found[0]) != 1:
        raise AttestationFailed(f"{what}: signed attribute {name} must appear once, one value")
    return found[0][0]


def _check_attributes(
    signer: _SignerInfo, content: bytes, hash_algorithm: hashes.HashAlgorithm, what: str
) -> dt.datetime | None:
    if not signer.attributes_der:
        raise AttestationFailed(f"{what}: no signed attributes")
    if signer.attributes_der != signer.attributes_as_sent:
        raise AttestationFailed(f"{what}: the signed attributes are not DER-encoded")
    if any(len(v) != 1 for v in signer.attributes.values()):
        raise AttestationFailed(f"{what}: a signed attribute type appears more than once")
    for oid in _SINGLE_VALUED:
        _single(signer, oid, oid, what)
    content_type = _single(signer, ATTR_CONTENT_TYPE, "contentType", what)
    if content_type is None or content_type.dotted != ID_DATA:
        raise AttestationFailed(f"{what}: signed contentType attribute missing or not id-data")
    digest = _single(signer, ATTR_MESSAGE_DIGEST, "messageDigest", what)
    if digest is None:
        raise AttestationFailed(f"{what}: signed messageDigest attribute missing")
    if bytes(digest.native) != _digest(hash_algorithm, content):
        raise AttestationFailed(f"{what}: messageDigest does not match the signed content")
    _check_protection(signer, what)
    signing_time = _single(signer, ATTR_SIGNING_TIME, "signingTime", what)
    if signing_time is None:
        return None
    value = signing_time.native
    if not isinstance(value, dt.datetime):
        raise AttestationFailed(f"{what}: signingTime is not a time")
    return value.astimezone(dt.UTC)


def _check_protection(signer: _SignerInfo, what: str) -> None:
    protection = _single(signer, ATTR_ALGORITHM_PROTECTION, "CMSAlgorithmProtection", what)
    if protection is None:
        return
    try:
        digest = protection["digest_algorithm"]["algorithm"].dotted
        sig = protection["signature_algorithm"]
        signature = None if sig.native is None else sig["algorithm"].dotted
    except (ValueError, TypeError, KeyError) as exc:
        raise AttestationFailed(f"{what}: CMSAlgorithmProtection: {_short(exc)}") from None
    if digest != signer.digest_algorithm or signature != signer.signature_algorithm:
        raise AttestationFailed(
            f"{what}: CMSAlgorithmProtection names other algorithms than the signer uses"
        )


def _digest(hash_algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(hash_algorithm)
    h.update(data)
    return h.finalize()


def _check_signature(
    signer: _SignerInfo, cert: x509.Certificate, hash_algorithm: hashes.HashAlgorithm, what: str
) -> None:
    key = cert.public_key()
    data = signer.attributes_der
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if len(signer.signature) != (key.key_size + 7) // 8:
                raise InvalidSignature
            key.verify(signer.signature, data, padding.PKCS1v15(), hash_algorithm)
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signer.signature, data, hash_algorithm)
        else:
            raise AttestationFailed(f"{what}: the certificate's key is {type(key).__name__}")
    except InvalidSignature:
        raise AttestationFailed(
            f"{what}: the signature does not verify with the certificate it names "
            f"(serial {cert.serial_number:x})"
        ) from None
