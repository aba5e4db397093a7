"""The DER-assembled leaf is byte for byte the certificate CertificateBuilder makes.

The reference below is the builder-based SPIRE template Plastron used before the leaf was
assembled from cached parts; every TBSCertificate byte must match it, for every issuer key type,
workload key type, serial length, validity era, subject shape and SAN size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from spiffe_pki import TD, WORKLOAD

from plastron.errors import InvalidSvid
from plastron.keymanager import PrivateKey, PublicKey
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.leaf_der import (
    der_oid,
    der_positive_integer,
    der_time,
    signature_hash,
    subject_key_id,
    tlv,
)
from plastron.spiffe.x509svid import make_ca_certificate, make_x509_svid, make_x509_svid_der

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)  # sub-second on purpose
SPIRE_SUBJECT = [
    x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE"),
]


def reference_leaf(
    *,
    spiffe_id: SpiffeId,
    public_key: PublicKey,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int,
    dns_names: Sequence[str] = (),
    subject: x509.Name | None = None,
) -> x509.Certificate:
    """SPIRE's leaf template through CertificateBuilder (pkg/server/credtemplate)."""
    if subject is None:
        cn = [x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])] if dns_names else []
        subject = x509.Name([*SPIRE_SUBJECT, *cn])
    try:
        skid = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        akid = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(skid)
    except x509.ExtensionNotFound:
        akid = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    sans = [x509.UniformResourceIdentifier(str(spiffe_id))]
    sans += [x509.DNSName(n) for n in dns_names]  # type: ignore[misc]
    usage = x509.KeyUsage(True, False, True, False, True, False, False, False, False)
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuer.subject)
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(akid, critical=False)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


@cache
def key(kind: str) -> PrivateKey:
    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}
    if kind in curves:
        return ec.generate_private_key(curves[kind])
    return rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))


@cache
def issuer_for(kind: str) -> x509.Certificate:
    return make_ca_certificate(
        trust_domain=TD,
        public_key=key(kind).public_key(),
        issuer=None,
        issuer_key=key(kind),
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=365 * 40),
    )


def verify_signature(leaf: x509.Certificate, issuer_key: PrivateKey) -> None:
    public = issuer_key.public_key()
    algorithm = leaf.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(algorithm))


def assert_same_as_reference(
    *, issuer_kind: str = "p256", workload_kind: str = "p256", **overrides: object
) -> x509.Certificate:
    """Issue one leaf both ways (defaults: P-256 keys, one hour from NOW) and compare them."""
    kwargs: dict[str, object] = {
        "spiffe_id": WORKLOAD,
        "public_key": key(workload_kind).public_key(),
        "issuer": issuer_for(issuer_kind),
        "issuer_key": key(issuer_kind),
        "not_before": NOW,
        "not_after": NOW + dt.timedelta(hours=1),
        "serial": 1,
        **overrides,
    }
    ours = make_x509_svid(**kwargs)  # type: ignore[arg-type]
    reference = reference_leaf(**kwargs)  # type: ignore[arg-type]
    assert ours.tbs_certificate_bytes == reference.tbs_certificate_bytes
    assert ours.signature_algorithm_oid == reference.signature_algorithm_oid
    issuer_key = kwargs["issuer_key"]
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    verify_signature(ours, issuer_key)
    # the whole certificate re-encodes to itself: outer SEQUENCE and BIT STRING are right too
    der = ours.public_bytes(serialization.Encoding.DER)
    assert x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.DER) == der
    return ours


@pytest.mark.parametrize("issuer_kind", ["p256", "p384", "p521", "rsa2048", "rsa3072"])
@pytest.mark.parametrize("workload_kind", ["p256", "p384", "rsa2048"])
def test_every_key_pairing_matches_the_builder(issuer_kind: str, workload_kind: str) -> None:
    assert_same_as_reference(issuer_kind=issuer_kind, workload_kind=workload_kind, serial=0x1234)


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x100, 2**127, 2**128 - 1, 2**159 - 1])
def test_serials_of_every_length_and_top_bit(serial: int) -> None:
    leaf = assert_same_as_reference(serial=serial)
    assert leaf.serial_number == serial


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[arg-type,misc]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NOW, NOW + dt.timedelta(minutes=5)),
        (utc(2049, 12, 31, 23), utc(2049, 12, 31, 23, 59, 59)),
        (utc(2049, 12, 31, 23), utc(2050, 1, 1)),
        (utc(2050, 1, 1), utc(2051, 6, 1, 7, 8, 9, 999999)),
        (NOW.astimezone(dt.timezone(dt.timedelta(hours=-7))), NOW + dt.timedelta(days=3)),
    ],
)
def test_validity_either_side_of_2050(start: dt.datetime, end: dt.datetime) -> None:
    leaf = assert_same_as_reference(not_before=start, not_after=end)
    assert leaf.not_valid_before_utc == start.astimezone(dt.UTC).replace(microsecond=0)


@pytest.mark.parametrize(
    "subject",
    [
        None,
        x509.Name([]),
        x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bäckerei Ünïcode"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
                x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.org"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "x" * 200),
            ]
        ),
    ],
)
@pytest.mark.parametrize("dns_count", [0, 1, 3, 40])
def test_subjects_and_san_sizes(subject: x509.Name | None, dns_count: int) -> None:
    dns = [f"host-{i}.svc.cluster.local" for i in range(dns_count)]
    leaf = assert_same_as_reference(workload_kind="p384", dns_names=dns, subject=subject)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical == (subject is not None and len(subject) == 0)


def test_issuer_without_subject_key_id_and_with_a_long_subject() -> None:
    """An upstream CA that carries no SKID: the AKID is derived from its key."""
    issuer_key = key("p384")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Upstream " + "o" * 150),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US", _type=_ASN1Type.PrintableString),
        ]
    )
    issuer = (
        x509.CertificateBuilder()
        .issuer_name(name)
        .subject_name(name)
        .public_key(issuer_key.public_key())
        .serial_number(5)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )
    leaf = assert_same_as_reference(
        issuer=issuer,
        issuer_key=issuer_key,
        not_after=NOW + dt.timedelta(days=5),  # clamped to the issuer's expiry
    )
    assert leaf.not_valid_after_utc == issuer.not_valid_after_utc
    assert leaf.issuer.public_bytes() == name.public_bytes()


DNS_NAME = r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,3}"


@settings(max_examples=60, deadline=None)
@given(
    serial=st.integers(min_value=1, max_value=2**159 - 1),
    path=st.from_regex(r"/[a-zA-Z0-9._-]{1,40}(/[a-zA-Z0-9._-]{1,40}){0,6}", fullmatch=True),
    dns=st.lists(st.from_regex(DNS_NAME, fullmatch=True), max_size=6),
    seconds=st.integers(min_value=1, max_value=10**9),
)
def test_random_leaves_match_the_builder(
    serial: int, path: str, dns: list[str], seconds: int
) -> None:
    assume(not any(part in {".", ".."} for part in path.split("/")))  # not valid in an ID
    assert_same_as_reference(
        spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"),
        not_after=NOW + dt.timedelta(seconds=seconds),
        serial=serial,
        dns_names=dns,
    )


def test_der_primitives() -> None:
    assert der_oid(x509.ObjectIdentifier("1.2.840.10045.4.3.2")).hex() == "06082a8648ce3d040302"
    assert der_oid(x509.ObjectIdentifier("2.5.29.17")).hex() == "0603551d11"
    assert der_positive_integer(0x80).hex() == "02020080"
    assert der_positive_integer(0x7F).hex() == "02017f"
    assert tlv(0x04, b"a" * 0x80)[:3].hex() == "048180"
    assert tlv(0x04, b"a" * 0x100)[:4].hex() == "04820100"
    assert der_time(utc(2049, 12, 31, 23, 59, 59)) == b"\x17\x0d491231235959Z"
    assert der_time(utc(2050, 1, 1)) == b"\x18\x0f20500101000000Z"


def test_subject_key_id_refuses_a_truncated_key() -> None:
    spki = (
        key("p256")
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert len(subject_key_id(spki)) == 20
    with pytest.raises(InvalidSvid, match="runs past the end"):
        subject_key_id(spki[:-5])


def test_an_unsupported_issuer_key_is_refused() -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(InvalidSvid, match="cannot sign X509-SVIDs with a"):
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=key("p256").public_key(),
            issuer=issuer_for("p256"),
            issuer_key=ed_key,  # type: ignore[arg-type]
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
        )


@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
def test_the_der_only_leaf_is_the_parsed_leaf(kind: str) -> None:
    """A batch passes leaves on as DER without parsing them back: the same certificate."""
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    args = {
        "spiffe_id": WORKLOAD,
        "public_key": leaf_key,
        "issuer": issuer_for(kind),
        "issuer_key": key(kind),
        "not_before": NOW,
        "not_after": NOW + dt.timedelta(hours=1),
        "dns_names": ("a.example.org",),
        "serial": 7,
    }
    der = make_x509_svid_der(**args)  # type: ignore[arg-type]
    parsed = make_x509_svid(**args)  # type: ignore[arg-type]
    assert x509.load_der_x509_certificate(der).tbs_certificate_bytes == (
        parsed.tbs_certificate_bytes
    )
    x509.load_der_x509_certificate(der).verify_directly_issued_by(issuer_for(kind))


def test_a_leaf_from_another_issuer_object_uses_that_issuer() -> None:
    """The template of the last issuer is reused only for that very certificate object."""
    leaves = [
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=key("p256").public_key(),
            issuer=issuer_for(kind),
            issuer_key=key(kind),
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
        )
        for kind in ("p256", "p384", "p256")
    ]
    for leaf, kind in zip(leaves, ("p256", "p384", "p256"), strict=True):
        leaf.verify_directly_issued_by(issuer_for(kind))
        assert leaf.issuer == issuer_for(kind).subject
