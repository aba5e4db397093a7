"""x509pop wire codecs: SPIRE's JSON shapes, the signature variants a Go agent produces, and
robustness of the decoders against arbitrary input (hypothesis)."""

from __future__ import annotations

import base64
import contextlib
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from x509pop_pki import new_key

from plastron.attestors.x509pop.wire import (
    Challenge,
    Response,
    combine_nonces,
    decode_challenge,
    decode_payload,
    decode_response,
    encode_challenge,
    encode_payload,
    encode_response,
    sign_response,
    verify_response,
)
from plastron.errors import AttestationFailed, InvalidArgument


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_payload_is_spire_attestation_data() -> None:
    assert encode_payload([b"\x30\x01", b"\x30\x02"]) == b'{"certificates":["MAE=","MAI="]}'
    assert decode_payload(b'{"certificates":["MAE=","MAI="]}', 5) == [b"\x30\x01", b"\x30\x02"]


def test_challenge_matches_go_marshalling() -> None:
    nonce = bytes(range(32))
    assert encode_challenge(Challenge("ecdsa", nonce)) == (
        b'{"rsa_signature":null,"ecdsa_signature":{"nonce":"' + b64(nonce).encode() + b'"}}'
    )
    assert decode_challenge(encode_challenge(Challenge("rsa", nonce))) == Challenge("rsa", nonce)


def test_response_round_trip_and_null_half() -> None:
    resp = Response("ecdsa", b"n" * 32, r=b"\x01", s=b"\x02")
    assert decode_response(encode_response(resp)) == resp
    # a Go agent sends the other half as null; an agent that leaves it out is accepted too
    body = {"nonce": b64(b"n" * 32), "signature": b64(b"sig")}
    assert decode_response(json.dumps({"rsa_signature": body}).encode()).signature == b"sig"


def test_rsa_pss_with_maximum_salt_verifies() -> None:
    # Go's rsa.SignPSS(..., nil) uses the longest salt; SPIRE verifies with auto-detection
    key = new_key("rsa-2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    challenge = Challenge("rsa", os.urandom(32))
    agent_nonce = os.urandom(32)
    digest = combine_nonces(challenge.nonce, agent_nonce)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
    sig = key.sign(digest, pss, Prehashed(hashes.SHA256()))
    verify_response(key.public_key(), challenge, Response("rsa", agent_nonce, signature=sig))


def test_ecdsa_integers_are_minimal_big_endian() -> None:
    key = new_key("ec-p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    challenge = Challenge("ecdsa", os.urandom(32))
    for _ in range(20):
        resp = sign_response(key, challenge, os.urandom(32))
        assert resp.r[:1] != b"\x00" and resp.s[:1] != b"\x00"
        verify_response(key.public_key(), challenge, resp)
    # r and s padded with leading zeros (another encoder's choice) still verify
    digest = combine_nonces(challenge.nonce, b"a" * 32)
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
    padded = Response("ecdsa", b"a" * 32, r=r.to_bytes(33, "big"), s=s.to_bytes(33, "big"))
    verify_response(key.public_key(), challenge, padded)


def test_rsa_signature_of_wrong_length_is_refused() -> None:
    key = new_key("rsa-2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    challenge = Challenge("rsa", os.urandom(32))
    good = sign_response(key, challenge, os.urandom(32))
    bad = Response("rsa", good.nonce, signature=b"\x00" + good.signature)
    with pytest.raises(AttestationFailed, match="does not verify"):
        verify_response(key.public_key(), challenge, bad)


@pytest.mark.parametrize(
    "text",
    [
        b'{"rsa_signature":{"nonce":"'
        + b64(b"n" * 32).encode()
        + b'"},"ecdsa_signature":{"nonce":"'
        + b64(b"n" * 32).encode()
        + b'"}}',
        b'{"rsa_signature":null,"ecdsa_signature":null}',
        b'{"rsa_signature":{"nonce":"' + b64(b"n" * 32).encode() + b'","extra":1}}',
        b'{"ecdsa_signature":{"nonce":"' + b64(b"n" * 33).encode() + b'"}}',
    ],
)
def test_challenge_decoder_refuses_ambiguous_or_malformed(text: bytes) -> None:
    with pytest.raises(InvalidArgument):
        decode_challenge(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoders_raise_only_invalid_argument_on_bytes(data: bytes) -> None:
    for decode in (decode_challenge, decode_response, lambda d: decode_payload(d, 5)):
        with contextlib.suppress(InvalidArgument):
            decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["rsa_signature", "ecdsa_signature", "certificates", "nonce", "x"]),
        json_values,
        max_size=3,
    )
)
def test_decoders_raise_only_invalid_argument_on_json(obj: dict[str, object]) -> None:
    data = json.dumps(obj).encode()
    for decode in (decode_challenge, decode_response, lambda d: decode_payload(d, 5)):
        with contextlib.suppress(InvalidArgument):
            decode(data)
