"""aws_iid.verify: the offline check of an instance identity document and its signatures,
with test keys registered for a fake region (the production code runs unchanged), and AWS's
published certificates as shipped."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from plastron.attestors.aws_iid import MAX_LEEWAY, AwsCertificates, verify
from plastron.errors import AttestationFailed
from tests.aws_fakes import ACCOUNT, OTHER_REGION, REGION, FakeSigner, make_document, sign_cms

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SIGNER = FakeSigner()
OTHER = FakeSigner(region=OTHER_REGION, slot=1)
CERTS = OTHER.certificates(SIGNER.certificates())


def refused(document: bytes, match: str, **signatures: str) -> str:
    with pytest.raises(AttestationFailed, match=match) as info:
        verify(document, now=NOW, certificates=CERTS, **signatures)
    assert str(info.value).startswith("aws_iid: ")
    return str(info.value)


# ---- admitted ---------------------------------------------------------------------------------


def test_all_three_signatures_verify_and_the_claims_come_back() -> None:
    doc = make_document(instance_id="i-0aaaabbbbccccdddd")
    claims = verify(
        doc,
        rsa2048=SIGNER.rsa2048(doc),
        signature=SIGNER.signature(doc),
        pkcs7=SIGNER.pkcs7(doc),
        now=NOW,
        certificates=CERTS,
    )
    assert (claims.account_id, claims.region) == (ACCOUNT, REGION)
    assert claims.instance_id == "i-0aaaabbbbccccdddd"
    assert claims.availability_zone == f"{REGION}a"
    assert claims.verified_by == ("rsa2048", "signature", "pkcs7")
    assert claims.claims["instanceType"] == "t3.micro"


@pytest.mark.parametrize("ber", [True, False], ids=["ber-indefinite", "der"])
def test_rsa2048_in_ber_and_der(ber: bool) -> None:
    doc = make_document()
    assert verify(doc, rsa2048=SIGNER.rsa2048(doc, ber=ber), now=NOW, certificates=CERTS)


def test_a_region_may_have_several_certificates() -> None:
    rotated = FakeSigner(slot=2)
    certs = SIGNER.certificates(rotated.certificates())
    doc = make_document()
    for signer in (SIGNER, rotated):
        verify(doc, rsa2048=signer.rsa2048(doc), now=NOW, certificates=certs)
        verify(doc, signature=signer.signature(doc), now=NOW, certificates=certs)


# ---- the published certificates --------------------------------------------------------------


def test_published_certificates_load_by_kind_and_region() -> None:
    published = AwsCertificates.published()
    for kind in ("rsa2048", "rsa", "dsa"):
        assert "us-east-1" in published.regions(kind)
        assert len(published.regions(kind)) >= 30
    for region in published.regions("rsa2048"):
        (cert,) = published.for_region("rsa2048", region)
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048, region
    assert isinstance(published.for_region("dsa", "us-east-1")[0].public_key(), dsa.DSAPublicKey)
    # the expired global certificate is provenance only
    assert not any("global" in r for k in ("rsa2048", "rsa", "dsa") for r in published.regions(k))


def test_test_region_is_unknown_to_the_published_set() -> None:
    doc = make_document()
    with pytest.raises(AttestationFailed, match="no rsa2048 certificate is known for region"):
        verify(doc, rsa2048=SIGNER.rsa2048(doc), now=NOW)


# ---- refused: the document and its signatures -------------------------------------------------


def test_tampered_document_is_refused() -> None:
    doc = make_document()
    tampered = doc.replace(b"t3.micro", b"t3.large")
    refused(tampered, "signed content is not the presented document", rsa2048=SIGNER.rsa2048(doc))
    refused(tampered, "does not verify", signature=SIGNER.signature(doc))
    refused(tampered, "signed content is not the presented document", pkcs7=SIGNER.pkcs7(doc))


def test_cms_content_other_than_the_presented_document_is_refused() -> None:
    mine = make_document(instance_id="i-0000000000000aaaa")
    theirs = make_document(instance_id="i-0000000000000bbbb")
    # a genuine signature over another instance's document, presented with ours
    refused(mine, "not the presented document", rsa2048=SIGNER.rsa2048(theirs))


def test_signature_from_another_regions_key_is_refused() -> None:
    doc = make_document(region=REGION)
    message = refused(doc, "not one of the 1 certificate", rsa2048=OTHER.rsa2048(doc))
    assert "trusted for this region" in message
    refused(doc, "does not verify with any of the 1 rsa", signature=OTHER.signature(doc))
    refused(doc, "not one of the 1 certificate", pkcs7=OTHER.pkcs7(doc))


def test_cms_naming_the_regions_certificate_but_signed_by_another_key_is_refused() -> None:
    doc = make_document()
    forged = sign_cms(doc, OTHER.rsa2048_key, OTHER.rsa2048_cert, named=SIGNER.rsa2048_cert)
    encoded = base64.b64encode(forged).decode()
    refused(doc, "does not verify with the certificate it names", rsa2048=encoded)


def test_every_given_signature_must_verify() -> None:
    doc = make_document()
    refused(doc, "signature: ", rsa2048=SIGNER.rsa2048(doc), signature=OTHER.signature(doc))


def test_no_signature_is_refused() -> None:
    refused(make_document(), "no signature to verify")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-----BEGIN PKCS7-----\nMIAG\n-----END PKCS7-----", "without PEM armour"),
        ("not base64!", "not valid base64"),
        ("", "non-empty base64"),
        (base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "not a valid CMS SignedData"),
    ],
)
def test_malformed_cms_is_refused_cleanly(value: str, match: str) -> None:
    refused(make_document(), match, rsa2048=value)


def test_truncated_cms_is_always_a_clean_refusal() -> None:
    doc = make_document()
    blob = base64.b64decode(SIGNER.rsa2048(doc))
    for cut in (1, 2, 10, 40, len(blob) // 2, len(blob) - 300, len(blob) - 3, len(blob) - 1):
        short = base64.b64encode(blob[:cut]).decode()
        refused(doc, "rsa2048: ", rsa2048=short)
    longer = base64.b64encode(blob + b"\x00").decode()
    refused(doc, "not a valid CMS SignedData", rsa2048=longer)


def test_detached_signature_is_refused() -> None:
    doc = make_document()
    refused(doc, "detached", rsa2048=SIGNER.rsa2048(doc, detached=True))


def _attrs(*items: tuple[str, object]) -> list[asn1_cms.CMSAttribute]:
    return [asn1_cms.CMSAttribute({"type": t, "values": [v]}) for t, v in items]


@pytest.mark.parametrize(
    ("attributes", "match"),
    [
        (_attrs(("content_type", "data")), "messageDigest attribute missing"),
        (_attrs(("message_digest", b"\x00" * 32)), "contentType attribute missing"),
        (
            _attrs(("content_type", "data"), ("message_digest", b"\x00" * 32)),
            "messageDigest does not match",
        ),
        ([], "contentType attribute missing"),
    ],
)
def test_signed_attribute_rules(attributes: list[asn1_cms.CMSAttribute], match: str) -> None:
    doc = make_document()
    refused(doc, match, rsa2048=SIGNER.rsa2048(doc, attributes=attributes))


def test_rsa2048_with_sha1_is_refused() -> None:
    doc = make_document()
    refused(
        doc,
        "digest algorithm 1.3.14.3.2.26 is not accepted",
        rsa2048=SIGNER.rsa2048(doc, digest="sha1"),
    )


# ---- refused: time ----------------------------------------------------------------------------


def test_expired_and_not_yet_valid_certificates_are_refused() -> None:
    old = FakeSigner(
        slot=3, not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1)
    )
    young = FakeSigner(
        slot=4, not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=400)
    )
    doc = make_document(pending=NOW - dt.timedelta(days=500))
    for signer, match in ((old, "expired at"), (young, "is not valid before")):
        certs = signer.certificates()
        for name in ("rsa2048", "signature", "pkcs7"):
            sign = getattr(signer, name)
            with pytest.raises(AttestationFailed, match=match):
                verify(doc, now=NOW, certificates=certs, **{name: sign(doc)})


def test_leeway_covers_small_clock_skew_only() -> None:
    doc = make_document(pending=NOW + dt.timedelta(minutes=2))
    verify(doc, signature=SIGNER.signature(doc), now=NOW, certificates=CERTS)
    future = make_document(pending=NOW + dt.timedelta(hours=2))
    refused(future, "pendingTime .* is after now", signature=SIGNER.signature(future))


def test_signing_time_rules() -> None:
    doc = make_document(pending=NOW - dt.timedelta(hours=1))
    later = SIGNER.rsa2048(doc, signing_time=NOW + dt.timedelta(hours=2))
    refused(doc, "signingTime .* is after now", rsa2048=later)
    earlier = SIGNER.rsa2048(doc, signing_time=NOW - dt.timedelta(hours=3))
    refused(doc, "precedes the document's pendingTime", rsa2048=earlier)


def test_leeway_and_clock_are_checked() -> None:
    doc = make_document()
    with pytest.raises(ValueError, match="leeway"):
        verify(doc, signature="x", now=NOW, leeway=MAX_LEEWAY * 2)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(doc, signature="x", now=NOW.replace(tzinfo=None))


# ---- refused: the document's JSON -------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"accountId": "12345"}, "accountId '12345' is not an AWS accountId"),
        ({"accountId": "../../server"}, "is not an AWS accountId"),
        ({"instanceId": "i-../x"}, "is not an AWS instanceId"),
        ({"instanceId": 7}, "'instanceId' must be a non-empty string"),
        ({"region": "us-east-1/../x"}, "is not an AWS region"),
        ({"pendingTime": "yesterday"}, "pendingTime 'yesterday' is not"),
        ({"imageId": None}, "'imageId' must be a non-empty string"),
    ],
)
def test_malformed_documents_are_refused(change: dict[str, object], match: str) -> None:
    body = json.loads(make_document())
    body.update(change)
    doc = json.dumps(body).encode()
    refused(doc, match, signature=SIGNER.signature(doc))


def test_duplicate_keys_are_refused() -> None:
    doc = make_document()[:-1] + b', "accountId" : "999999999999"}'
    refused(doc, "duplicate JSON key 'accountId'", signature=SIGNER.signature(doc))
