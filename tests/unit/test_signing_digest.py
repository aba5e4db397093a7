"""The digest checks every hardware-held key makes before signing."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed

from plastron.errors import KeyManagerError
from plastron.signing_digest import MAX_SIGN_INPUT, signing_digest


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
    ],
)
def test_messages_are_hashed_here(algorithm: hashes.HashAlgorithm, expected: type) -> None:
    digest, used = signing_digest(b"tbs", algorithm, who="pkcs11")
    assert digest == expected(b"tbs").digest()
    assert used.name == algorithm.name


def test_a_prehashed_digest_of_the_right_length_passes_through() -> None:
    digest = hashlib.sha384(b"tbs").digest()
    passed, used = signing_digest(digest, Prehashed(hashes.SHA384()), who="tpm")
    assert passed == digest
    assert used.name == "sha384"


@pytest.mark.parametrize(
    ("data", "algorithm", "message"),
    [
        (b"x", NoDigestInfo(), "tpm: signing without a DigestInfo is not allowed"),
        (b"x", hashes.SHA1(), "tpm: hash 'sha1' is not allowed"),
        (b"x" * 20, Prehashed(hashes.SHA1()), "tpm: hash 'sha1' is not allowed"),
        (b"x", hashes.MD5(), "tpm: hash 'md5' is not allowed"),
        (b"x" * 33, Prehashed(hashes.SHA256()), "prehashed input is 33 bytes, sha256 needs 32"),
        (b"x" * 32, Prehashed(hashes.SHA512()), "prehashed input is 32 bytes, sha512 needs 64"),
        (b"x" * (MAX_SIGN_INPUT + 1), hashes.SHA256(), "refusing to sign 1048577 bytes"),
    ],
)
def test_refusals_name_what_was_wrong(data: bytes, algorithm: object, message: str) -> None:
    with pytest.raises(KeyManagerError, match=message):
        signing_digest(data, algorithm, who="tpm")  # type: ignore[arg-type]
