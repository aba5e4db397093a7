"""X509-SVIDs: SPIRE's template, validation, and named bad leaves that must be refused."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from spiffe_pki import NOW, TD, WORKLOAD, Pki, make_root

from plastron.errors import FailedPrecondition, InvalidSvid
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.spiffe.x509svid import (
    X509Svid,
    certificates_to_pem,
    load_pem_certificates,
    make_ca_certificate,
    make_x509_svid,
    parse_der_chain,
    spiffe_id_from_certificate,
    validate_x509_svid,
)

DER = serialization.Encoding.DER


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_leaf_follows_spire_template(pki: Pki) -> None:
    leaf = pki.leaf
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(WORKLOAD)]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org", "web"]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web.example.org"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIRE"
    assert leaf.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and not bc.value.ca
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and isinstance(ku.value, x509.KeyUsage)
    assert ku.value.digital_signature and ku.value.key_encipherment and ku.value.key_agreement
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    eku = ext(leaf, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert 1 <= leaf.serial_number < 2**128
    pub = pki.leaf_key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        bits = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    else:
        bits = pub.public_bytes(DER, serialization.PublicFormat.PKCS1)
    skid = ext(leaf, x509.SubjectKeyIdentifier).value
    assert isinstance(skid, x509.SubjectKeyIdentifier)
    # SKID = SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 4.2.1.2 method 1).
    assert skid.digest == hashlib.sha1(bits).digest()
    akid = ext(leaf, x509.AuthorityKeyIdentifier).value
    inter_skid = ext(pki.inter, x509.SubjectKeyIdentifier).value
    assert isinstance(akid, x509.AuthorityKeyIdentifier)
    assert isinstance(inter_skid, x509.SubjectKeyIdentifier)
    assert akid.key_identifier == inter_skid.digest


def test_ca_certificate_follows_template(pki: Pki) -> None:
    root = pki.root
    assert root.issuer == root.subject
    serial_attr = root.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    assert serial_attr == str(root.serial_number)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SPIFFE"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert spiffe_id_from_certificate(root) == TD.id
    root.verify_directly_issued_by(root)
    pki.inter.verify_directly_issued_by(root)


def test_signature_hash_follows_issuer_key(pki: Pki) -> None:
    expected = (
        hashes.SHA384
        if isinstance(pki.inter_key, ec.EllipticCurvePrivateKey)
        and (pki.inter_key.curve.name == "secp384r1")
        else hashes.SHA256
    )
    assert isinstance(pki.leaf.signature_hash_algorithm, expected)


def test_valid_chain_validates(pki: Pki) -> None:
    assert validate_x509_svid([pki.leaf, pki.inter], [pki.root], NOW) == WORKLOAD


def test_leaf_directly_under_trusted_intermediate_validates(pki: Pki) -> None:
    assert validate_x509_svid([pki.leaf], [pki.inter], NOW) == WORKLOAD


def test_not_after_is_clamped_to_issuer(ec_pki: Pki) -> None:
    leaf = make_x509_svid(
        spiffe_id=WORKLOAD,
        public_key=ec_pki.leaf_key.public_key(),
        issuer=ec_pki.inter,
        issuer_key=ec_pki.inter_key,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=30),
    )
    assert leaf.not_valid_after_utc == ec_pki.inter.not_valid_after_utc
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


def test_serials_are_random(ec_pki: Pki) -> None:
    serials = {
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=ec_pki.inter,
            issuer_key=ec_pki.inter_key,
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
        ).serial_number
        for _ in range(5)
    }
    assert len(serials) == 5


def test_extension_order_and_per_issuer_parts(ec_pki: Pki, pki: Pki) -> None:
    """SPIRE's order; the per-issuer parts (cached per CA) follow the issuer that signs."""
    leaves = [
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=issuer,
            issuer_key=key,
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
        )
        for issuer, key in ((ec_pki.inter, ec_pki.inter_key), (pki.inter, pki.inter_key)) * 2
    ]
    for leaf, issuer in zip(leaves, (ec_pki.inter, pki.inter) * 2, strict=True):
        assert [type(e.value) for e in leaf.extensions] == [
            x509.BasicConstraints,
            x509.KeyUsage,
            x509.ExtendedKeyUsage,
            x509.SubjectAlternativeName,
            x509.SubjectKeyIdentifier,
            x509.AuthorityKeyIdentifier,
        ]
        assert leaf.issuer == issuer.subject
        akid = ext(leaf, x509.AuthorityKeyIdentifier).value
        skid = ext(issuer, x509.SubjectKeyIdentifier).value
        assert isinstance(akid, x509.AuthorityKeyIdentifier)
        assert isinstance(skid, x509.SubjectKeyIdentifier)
        assert akid.key_identifier == skid.digest


@pytest.mark.parametrize("serial", [0, -1, 2**159])
def test_out_of_range_serials_are_refused(ec_pki: Pki, serial: int) -> None:
    with pytest.raises(InvalidSvid, match="serial"):
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=ec_pki.inter,
            issuer_key=ec_pki.inter_key,
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
            serial=serial,
        )


def test_leaf_needs_a_path(ec_pki: Pki) -> None:
    with pytest.raises(InvalidSvid, match="needs a SPIFFE ID with a path"):
        make_x509_svid(
            spiffe_id=TD.id,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=ec_pki.inter,
            issuer_key=ec_pki.inter_key,
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
        )


@pytest.mark.parametrize("name", ["", "caf\u00e9.example", "a" * 254, "tab\there"])
def test_bad_dns_names_are_refused(ec_pki: Pki, name: str) -> None:
    with pytest.raises(InvalidSvid, match="is not a printable ASCII name"):
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=ec_pki.inter,
            issuer_key=ec_pki.inter_key,
            not_before=NOW,
            not_after=NOW + dt.timedelta(hours=1),
            dns_names=[name],
        )


def test_empty_validity_after_clamp_is_refused(ec_pki: Pki) -> None:
    with pytest.raises(InvalidSvid, match="validity is empty"):
        make_x509_svid(
            spiffe_id=WORKLOAD,
            public_key=ec_pki.leaf_key.public_key(),
            issuer=ec_pki.inter,
            issuer_key=ec_pki.inter_key,
            not_before=ec_pki.inter.not_valid_after_utc + dt.timedelta(seconds=1),
            not_after=ec_pki.inter.not_valid_after_utc + dt.timedelta(hours=1),
        )


# ---- named bad fixtures (after go-spiffe's wrong-leaf-*.pem) ------------------------------------


def _signed(
    pki: Pki, edit: Callable[[x509.CertificateBuilder], x509.CertificateBuilder]
) -> x509.Certificate:
    """A leaf built from scratch under pki.inter, shaped by ``edit``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bad")]))
        .issuer_name(pki.inter.subject)
        .public_key(pki.leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.inter_key.public_key()),
            critical=False,
        )
    )
    return edit(builder).sign(pki.inter_key, hashes.SHA256())


def _ku(**kw: bool) -> x509.KeyUsage:
    fields = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    fields.update(kw)
    return x509.KeyUsage(**fields)


def _uri(*uris: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])


WRONG_LEAVES: dict[
    str, tuple[Callable[[x509.CertificateBuilder], x509.CertificateBuilder], str]
] = {
    "wrong-leaf-ca-true": (
        lambda b: (
            b.add_extension(_uri(str(WORKLOAD)), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(_ku(digital_signature=True), True)
        ),
        "must not have the CA flag set",
    ),
    "wrong-leaf-two-uri-sans": (
        lambda b: b.add_extension(
            _uri(str(WORKLOAD), "spiffe://example.org/other"), False
        ).add_extension(_ku(digital_signature=True), True),
        "exactly one URI SAN, found 2",
    ),
    "wrong-leaf-no-uri-san": (
        lambda b: b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("web.example.org")]), False
        ).add_extension(_ku(digital_signature=True), True),
        "exactly one URI SAN, found 0",
    ),
    "wrong-leaf-no-san-extension": (
        lambda b: b.add_extension(_ku(digital_signature=True), True),
        "no subjectAltName",
    ),
    "wrong-leaf-not-spiffe-uri": (
        lambda b: b.add_extension(_uri("https://example.org/w"), False).add_extension(
            _ku(digital_signature=True), True
        ),
        "not a valid SPIFFE ID",
    ),
    "wrong-leaf-trust-domain-id": (
        lambda b: b.add_extension(_uri("spiffe://example.org"), False).add_extension(
            _ku(digital_signature=True), True
        ),
        "has no path",
    ),
    "wrong-leaf-key-cert-sign": (
        lambda b: b.add_extension(_uri(str(WORKLOAD)), False).add_extension(
            _ku(digital_signature=True, key_cert_sign=True), True
        ),
        "must not have 'keyCertSign'",
    ),
    "wrong-leaf-crl-sign": (
        lambda b: b.add_extension(_uri(str(WORKLOAD)), False).add_extension(
            _ku(digital_signature=True, crl_sign=True), True
        ),
        "must not have 'cRLSign'",
    ),
    "wrong-leaf-no-digital-signature": (
        lambda b: b.add_extension(_uri(str(WORKLOAD)), False).add_extension(
            _ku(key_encipherment=True), True
        ),
        "must have 'digitalSignature'",
    ),
    "wrong-leaf-no-key-usage": (
        lambda b: b.add_extension(_uri(str(WORKLOAD)), False),
        "must have 'digitalSignature'",
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG_LEAVES))
def test_wrong_leaves_are_rejected(ec_pki: Pki, name: str) -> None:
    edit, message = WRONG_LEAVES[name]
    leaf = _signed(ec_pki, edit)
    with pytest.raises(InvalidSvid, match=message):
        validate_x509_svid([leaf, ec_pki.inter], [ec_pki.root], NOW)


def test_well_formed_hand_built_leaf_passes(ec_pki: Pki) -> None:
    """Control for the table above: the same builder with correct extensions validates."""
    leaf = _signed(
        ec_pki,
        lambda b: b.add_extension(_uri(str(WORKLOAD)), False).add_extension(
            _ku(digital_signature=True), True
        ),
    )
    assert validate_x509_svid([leaf, ec_pki.inter], [ec_pki.root], NOW) == WORKLOAD


def test_expired_leaf_is_rejected(pki: Pki) -> None:
    later = pki.leaf.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(InvalidSvid, match=r"leaf certificate .* expired at"):
        validate_x509_svid([pki.leaf, pki.inter], [pki.root], later)


def test_not_yet_valid_leaf_is_rejected(ec_pki: Pki) -> None:
    earlier = ec_pki.leaf.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(InvalidSvid, match="not valid before"):
        validate_x509_svid([ec_pki.leaf, ec_pki.inter], [ec_pki.root], earlier)


def test_expired_intermediate_is_rejected(ec_pki: Pki) -> None:
    # The leaf is clamped to the intermediate, so move the clock past both but not the root.
    later = ec_pki.inter.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(InvalidSvid, match="expired at"):
        validate_x509_svid([ec_pki.leaf, ec_pki.inter], [ec_pki.root], later)


def test_expired_root_is_rejected(ec_pki: Pki) -> None:
    """A leaf that outlives its root (not built by us: ours are clamped) fails on the root."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = make_ca_certificate(
        trust_domain=TD,
        public_key=key.public_key(),
        issuer=None,
        issuer_key=key,
        not_before=NOW - dt.timedelta(days=2),
        not_after=NOW - dt.timedelta(days=1),
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(ec_pki.leaf.subject)
        .issuer_name(root.subject)
        .public_key(ec_pki.leaf_key.public_key())
        .serial_number(9)
        .not_valid_before(NOW - dt.timedelta(days=2))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(_uri(str(WORKLOAD)), False)
        .add_extension(_ku(digital_signature=True), True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    assert validate_x509_svid([leaf], [root], NOW - dt.timedelta(days=1, hours=1)) == WORKLOAD
    with pytest.raises(InvalidSvid, match="does not chain to a trusted authority"):
        validate_x509_svid([leaf], [root], NOW)


def test_signed_by_another_ca_is_rejected(pki: Pki) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = make_root(other_key)
    with pytest.raises(InvalidSvid, match="does not chain to a trusted authority"):
        validate_x509_svid([pki.leaf, pki.inter], [other_root], NOW)


def test_impostor_ca_with_same_name_is_rejected(ec_pki: Pki) -> None:
    """Same subject and SKID-looking shape as the real intermediate, different key."""
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    forged_leaf = (
        x509.CertificateBuilder()
        .subject_name(ec_pki.leaf.subject)
        .issuer_name(ec_pki.inter.subject)
        .public_key(ec_pki.leaf_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(_uri(str(WORKLOAD)), False)
        .add_extension(_ku(digital_signature=True), True)
        .add_extension(ext(ec_pki.leaf, x509.AuthorityKeyIdentifier).value, False)
        .sign(impostor_key, hashes.SHA256())
    )
    with pytest.raises(InvalidSvid, match="does not chain"):
        validate_x509_svid([forged_leaf, ec_pki.inter], [ec_pki.root], NOW)


def test_intermediate_that_is_not_a_ca_is_rejected(ec_pki: Pki) -> None:
    # Another leaf SVID posing as the intermediate.
    with pytest.raises(InvalidSvid, match="is not a CA"):
        validate_x509_svid([ec_pki.leaf, ec_pki.leaf], [ec_pki.root], NOW)


def test_no_authorities_and_empty_or_long_chains_are_rejected(ec_pki: Pki) -> None:
    with pytest.raises(InvalidSvid, match=r"no X.509 authorities"):
        validate_x509_svid([ec_pki.leaf, ec_pki.inter], [], NOW)
    with pytest.raises(InvalidSvid, match="empty"):
        validate_x509_svid([], [ec_pki.root], NOW)
    with pytest.raises(InvalidSvid, match="limit"):
        validate_x509_svid([ec_pki.leaf] + [ec_pki.inter] * 16, [ec_pki.root], NOW)


# ---- the X509Svid value and DER chains -----------------------------------------------------------


def test_x509svid_value(ec_pki: Pki) -> None:
    svid = X509Svid(WORKLOAD, (ec_pki.leaf, ec_pki.inter), ec_pki.leaf_key)
    assert svid.leaf is ec_pki.leaf
    assert svid.expires_at == ec_pki.leaf.not_valid_after_utc
    assert svid.chain_der() == ec_pki.leaf.public_bytes(DER) + ec_pki.inter.public_bytes(DER)
    assert "private_key" not in repr(svid)
    again = X509Svid.from_der(svid.chain_der(), svid.key_pkcs8_der())
    assert again.spiffe_id == WORKLOAD and again.chain == svid.chain
    assert again.key_pkcs8_der() == svid.key_pkcs8_der()


def test_x509svid_refuses_mismatches(ec_pki: Pki) -> None:
    with pytest.raises(InvalidSvid, match=r"not spiffe://example.org/other"):
        X509Svid(SpiffeId.parse("spiffe://example.org/other"), (ec_pki.leaf,))
    with pytest.raises(InvalidSvid, match="empty certificate chain"):
        X509Svid(WORKLOAD, ())
    other = ec.generate_private_key(ec.SECP256R1())
    other_der = other.private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidSvid, match="does not match the leaf"):
        X509Svid.from_der(ec_pki.leaf.public_bytes(DER), other_der)
    with pytest.raises(FailedPrecondition, match="no private key"):
        X509Svid(WORKLOAD, (ec_pki.leaf,)).key_pkcs8_der()


def test_parse_der_chain_round_trip(pki: Pki) -> None:
    data = b"".join(c.public_bytes(DER) for c in (pki.leaf, pki.inter, pki.root))
    assert parse_der_chain(data) == [pki.leaf, pki.inter, pki.root]


def test_parse_der_chain_rejects_truncation_garbage_and_excess(ec_pki: Pki) -> None:
    der = ec_pki.leaf.public_bytes(DER)
    with pytest.raises(InvalidSvid, match="truncated"):
        parse_der_chain(der + der[:-1])
    with pytest.raises(InvalidSvid, match="empty"):
        parse_der_chain(b"")
    with pytest.raises(InvalidSvid, match="expected a SEQUENCE"):
        parse_der_chain(der + b"\x00")
    with pytest.raises(InvalidSvid, match="more than 2"):
        parse_der_chain(der * 3, max_certs=2)
    with pytest.raises(InvalidSvid, match="cannot be parsed"):
        parse_der_chain(b"\x30\x03\x02\x01\x01")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_parse_der_chain_on_arbitrary_bytes_raises_only_invalid_svid(data: bytes) -> None:
    with contextlib.suppress(InvalidSvid):
        parse_der_chain(data)


def test_pem_helpers(ec_pki: Pki) -> None:
    pem = certificates_to_pem([ec_pki.leaf, ec_pki.inter])
    assert load_pem_certificates(pem) == [ec_pki.leaf, ec_pki.inter]
    with pytest.raises(InvalidSvid, match="no parsable certificate"):
        load_pem_certificates(b"not pem")
    with pytest.raises(InvalidSvid, match="limit 1"):
        load_pem_certificates(pem, max_certs=1)


def test_ca_for_another_trust_domain_carries_its_id() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    td = TrustDomain("other.test")
    root = make_root(key, td)
    assert spiffe_id_from_certificate(root) == td.id
    assert hashlib.sha256(root.public_bytes(DER)).digest()  # well-formed DER
