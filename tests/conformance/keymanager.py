"""The KeyManager conformance suite (after SPIRE's keymanagertest.go), shared by every manager.

Use it by subclassing in a test module and providing a ``keymanager`` fixture that yields a
fresh, empty manager::

    class TestMemoryKeyManager(KeyManagerConformance):
        @pytest.fixture
        def keymanager(self) -> KeyManager:
            return MemoryKeyManager()

Managers that support only some key types narrow ``key_types`` (a TPM: EC P-256 and RSA-2048);
the suite then also checks that the others are refused with InvalidArgument. Persistent managers
subclass :class:`PersistentKeyManagerConformance` and add a ``reopen`` fixture: a callable that
opens a new manager over the same storage as ``keymanager``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from plastron.errors import InvalidArgument, NotFound
from plastron.keymanager import KeyManager, KeyType, PrivateKey, PublicKey

CertHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
HASHES: tuple[type[CertHash], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
BAD_KEY_IDS = ("", "../evil", "a/b", "/abs", "x" * 129, "with space", "k\u00e9y", "nul\x00", "..")
_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_key_type(public_key: PublicKey, key_type: KeyType) -> None:
    expected: dict[KeyType, tuple[type[Any], Any]] = {
        KeyType.EC_P256: (ec.EllipticCurvePublicKey, "secp256r1"),
        KeyType.EC_P384: (ec.EllipticCurvePublicKey, "secp384r1"),
        KeyType.RSA_2048: (rsa.RSAPublicKey, 2048),
        KeyType.RSA_4096: (rsa.RSAPublicKey, 4096),
    }
    cls, size = expected[key_type]
    assert isinstance(public_key, cls), f"{key_type.value}: got {type(public_key).__name__}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        assert public_key.curve.name == size
    else:
        assert public_key.key_size == size


def pss(hash_cls: type[hashes.HashAlgorithm]) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.DIGEST_LENGTH)


def verify(public_key: PublicKey, signature: bytes, data: bytes, **how: Any) -> None:
    """Verify with the public half; raises InvalidSignature when it does not match."""
    hash_alg: hashes.HashAlgorithm = how["hash"]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_alg))
    else:
        public_key.verify(signature, data, how.get("padding", padding.PKCS1v15()), hash_alg)


def sign_raw(signer: PrivateKey, data: bytes, hash_alg: hashes.HashAlgorithm) -> bytes:
    if isinstance(signer, ec.EllipticCurvePrivateKey):
        return signer.sign(data, ec.ECDSA(hash_alg))
    return signer.sign(data, padding.PKCS1v15(), hash_alg)


def self_signed(signer: PrivateKey, hash_alg: CertHash, **kw: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conformance")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signer.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(signer, hash_alg, **kw)


def jwt_algorithms(key_type: KeyType) -> tuple[str, ...]:
    if key_type is KeyType.EC_P256:
        return ("ES256",)
    if key_type is KeyType.EC_P384:
        return ("ES384",)
    return ("RS256", "PS256")


class KeyManagerConformance:
    """Behaviour every KeyManager must show. Subclasses provide the ``keymanager`` fixture."""

    key_types: ClassVar[tuple[KeyType, ...]] = tuple(KeyType)
    # Signatures made from each of 8 threads in the concurrency test.
    signatures_per_thread: ClassVar[int] = 8

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "key_type" in metafunc.fixturenames:
            metafunc.parametrize("key_type", self.key_types, ids=[k.value for k in self.key_types])

    def test_starts_empty(self, keymanager: KeyManager) -> None:
        assert keymanager.get_public_keys() == []

    def test_generate_key_has_requested_type(
        self, keymanager: KeyManager, key_type: KeyType
    ) -> None:
        public_key = keymanager.generate_key("k1", key_type)
        assert_key_type(public_key, key_type)
        assert spki(keymanager.get_public_key("k1")) == spki(public_key)
        assert spki(keymanager.signer("k1").public_key()) == spki(public_key)

    def test_get_public_keys_lists_every_key(
        self, keymanager: KeyManager, key_type: KeyType
    ) -> None:
        a = keymanager.generate_key("key-a", key_type)
        b = keymanager.generate_key("key_b.2", key_type)
        infos = {info.key_id: info for info in keymanager.get_public_keys()}
        assert set(infos) == {"key-a", "key_b.2"}
        for key_id, public_key in (("key-a", a), ("key_b.2", b)):
            info = infos[key_id]
            assert info.key_type is key_type
            assert spki(info.public_key) == spki(public_key)
            assert info.fingerprint == hashlib.sha256(spki(public_key)).hexdigest()
        assert infos["key-a"].fingerprint != infos["key_b.2"].fingerprint

    def test_overwrite_gives_new_key(self, keymanager: KeyManager, key_type: KeyType) -> None:
        first = keymanager.generate_key("rotating", key_type)
        other_type = next((k for k in self.key_types if k is not key_type), key_type)
        second = keymanager.generate_key("rotating", other_type)
        assert spki(first) != spki(second)
        assert_key_type(second, other_type)
        infos = keymanager.get_public_keys()
        assert [i.key_id for i in infos] == ["rotating"]
        assert infos[0].key_type is other_type
        assert infos[0].fingerprint == hashlib.sha256(spki(second)).hexdigest()
        signature = sign_raw(keymanager.signer("rotating"), b"data", hashes.SHA256())
        verify(second, signature, b"data", hash=hashes.SHA256())

    def test_raw_signature_verifies_and_tamper_is_rejected(
        self, keymanager: KeyManager, key_type: KeyType
    ) -> None:
        public_key = keymanager.generate_key("raw", key_type)
        signer = keymanager.signer("raw")
        for hash_cls in HASHES:
            signature = sign_raw(signer, b"payload", hash_cls())
            verify(public_key, signature, b"payload", hash=hash_cls())
            with pytest.raises(InvalidSignature):
                verify(public_key, signature, b"payloaD", hash=hash_cls())
        if isinstance(signer, rsa.RSAPrivateKey):
            signature = signer.sign(b"payload", pss(hashes.SHA256), hashes.SHA256())
            verify(
                public_key, signature, b"payload", hash=hashes.SHA256(), padding=pss(hashes.SHA256)
            )
            with pytest.raises(InvalidSignature):
                verify(
                    public_key,
                    signature,
                    b"other",
                    hash=hashes.SHA256(),
                    padding=pss(hashes.SHA256),
                )

    def test_signer_signs_certificates(self, keymanager: KeyManager, key_type: KeyType) -> None:
        public_key = keymanager.generate_key("ca", key_type)
        signer = keymanager.signer("ca")
        for hash_cls in HASHES:
            paddings: list[Any] = [None]
            if isinstance(signer, rsa.RSAPrivateKey):
                paddings = [padding.PKCS1v15(), pss(hash_cls)]
            for pad in paddings:
                kw = {} if pad is None else {"rsa_padding": pad}
                cert = self_signed(signer, hash_cls(), **kw)
                assert spki(cert.public_key()) == spki(public_key)  # type: ignore[arg-type]
                how: dict[str, Any] = {"hash": hash_cls()}
                if pad is not None:
                    how["padding"] = pad
                verify(public_key, cert.signature, cert.tbs_certificate_bytes, **how)
                cert.verify_directly_issued_by(cert)

    def test_signer_signs_csr(self, keymanager: KeyManager, key_type: KeyType) -> None:
        public_key = keymanager.generate_key("csr", key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr")])
        san = x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("spiffe://example.org/spire/agent/x")]
        )
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(san, critical=False)
            .sign(keymanager.signer("csr"), hashes.SHA256())
        )
        assert csr.is_signature_valid
        assert spki(csr.public_key()) == spki(public_key)  # type: ignore[arg-type]

    def test_signer_signs_jwt(self, keymanager: KeyManager, key_type: KeyType) -> None:
        public_key = keymanager.generate_key("jwt", key_type)
        claims = {"sub": "spiffe://example.org/w", "aud": ["a"], "exp": 4102444800}
        for alg in jwt_algorithms(key_type):
            token = jwt.encode(claims, keymanager.signer("jwt"), algorithm=alg)
            decoded = jwt.decode(token, public_key, algorithms=[alg], audience="a")
            assert decoded["sub"] == claims["sub"]
            head, body, sig = token.split(".")
            forged = f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
            with pytest.raises(jwt.InvalidSignatureError):
                jwt.decode(forged, public_key, algorithms=[alg], audience="a")

    def test_concurrent_signing(self, keymanager: KeyManager) -> None:
        key_type = self.key_types[0]
        public_key = keymanager.generate_key("busy", key_type)
        signer = keymanager.signer("busy")

        def work(worker: int) -> list[tuple[bytes, bytes]]:
            out = []
            for i in range(self.signatures_per_thread):
                data = f"worker {worker} message {i}".encode()
                out.append((data, sign_raw(signer, data, hashes.SHA256())))
            return out

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = [pair for batch in pool.map(work, range(8)) for pair in batch]
        assert len(results) == 8 * self.signatures_per_thread
        for data, signature in results:
            verify(public_key, signature, data, hash=hashes.SHA256())

    def test_unknown_key_is_not_found(self, keymanager: KeyManager) -> None:
        with pytest.raises(NotFound, match="nope"):
            keymanager.get_public_key("nope")
        with pytest.raises(NotFound, match="nope"):
            keymanager.signer("nope")

    def test_destroy_key(self, keymanager: KeyManager) -> None:
        key_type = self.key_types[0]
        keymanager.generate_key("doomed", key_type)
        keymanager.generate_key("kept", key_type)
        keymanager.destroy_key("doomed")
        with pytest.raises(NotFound, match="doomed"):
            keymanager.get_public_key("doomed")
        assert [i.key_id for i in keymanager.get_public_keys()] == ["kept"]
        keymanager.destroy_key("doomed")  # absent: no-op
        keymanager.destroy_key("never-existed")

    @pytest.mark.parametrize("bad_id", BAD_KEY_IDS, ids=repr)
    def test_bad_key_ids_are_rejected(self, keymanager: KeyManager, bad_id: str) -> None:
        key_type = self.key_types[0]
        for call in (
            lambda: keymanager.generate_key(bad_id, key_type),
            lambda: keymanager.get_public_key(bad_id),
            lambda: keymanager.signer(bad_id),
            lambda: keymanager.destroy_key(bad_id),
        ):
            with pytest.raises(InvalidArgument, match="key id"):
                call()
        assert keymanager.get_public_keys() == []

    def test_longest_key_id_is_accepted(self, keymanager: KeyManager) -> None:
        key_id = "k" * 128
        keymanager.generate_key(key_id, self.key_types[0])
        assert [i.key_id for i in keymanager.get_public_keys()] == [key_id]

    def test_bad_and_unsupported_key_types_are_rejected(self, keymanager: KeyManager) -> None:
        with pytest.raises(InvalidArgument):
            keymanager.generate_key("k", "ec-p256")  # type: ignore[arg-type]
        for key_type in KeyType:
            if key_type not in self.key_types:
                with pytest.raises(InvalidArgument, match=key_type.value):
                    keymanager.generate_key("k", key_type)
        assert keymanager.get_public_keys() == []


class PersistentKeyManagerConformance(KeyManagerConformance):
    """For managers whose keys outlive the object. Subclasses also provide ``reopen``."""

    def test_keys_survive_reopen(
        self,
        keymanager: KeyManager,
        reopen: Callable[[], KeyManager],
        key_type: KeyType,
    ) -> None:
        public_key = keymanager.generate_key("persisted", key_type)
        before = keymanager.get_public_keys()
        again = reopen()
        assert again.get_public_keys() == before
        assert spki(again.get_public_key("persisted")) == spki(public_key)
        signature = sign_raw(again.signer("persisted"), b"after restart", hashes.SHA256())
        verify(public_key, signature, b"after restart", hash=hashes.SHA256())

    def test_overwrite_and_destroy_survive_reopen(
        self, keymanager: KeyManager, reopen: Callable[[], KeyManager]
    ) -> None:
        key_type = self.key_types[0]
        keymanager.generate_key("gone", key_type)
        keymanager.generate_key("swapped", key_type)
        replacement = keymanager.generate_key("swapped", key_type)
        keymanager.destroy_key("gone")
        again = reopen()
        assert [i.key_id for i in again.get_public_keys()] == ["swapped"]
        assert spki(again.get_public_key("swapped")) == spki(replacement)
