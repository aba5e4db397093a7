"""KeyManager ``tpm``: the shared conformance suite against a real swtpm, plus TPM-only facts."""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from swtpm_fixtures import ManufacturerCa, SwtpmProcess, manufacture, start_copy

from plastron.errors import KeyManagerError, KeyManagerUnavailable
from plastron.keymanager import KeyManager, KeyType
from plastron.signing_digest import MAX_SIGN_INPUT
from plastron.tpm.keymanager import TpmKeyManager

_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.conformance.keymanager import PersistentKeyManagerConformance  # noqa: E402

pytestmark = pytest.mark.swtpm


class TestTpmKeyManager(PersistentKeyManagerConformance):
    key_types: ClassVar[tuple[KeyType, ...]] = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
    signatures_per_thread: ClassVar[int] = 4

    @pytest.fixture
    def keymanager(self, swtpm: SwtpmProcess, tmp_path: Path) -> KeyManager:
        return TpmKeyManager(tmp_path / "agent-data", swtpm.tcti)

    @pytest.fixture
    def reopen(self, swtpm: SwtpmProcess, tmp_path: Path) -> Callable[[], KeyManager]:
        return lambda: TpmKeyManager(tmp_path / "agent-data", swtpm.tcti)


def test_key_blob_is_useless_on_another_tpm(
    swtpm: SwtpmProcess, manufacturer_ca: ManufacturerCa, tmp_path: Path
) -> None:
    """A copied data_dir does not sign on a different TPM (its SRK differs)."""
    km = TpmKeyManager(tmp_path / "node-a", swtpm.tcti)
    km.generate_key("agent-svid", KeyType.EC_P256)
    assert b"TSS2 PRIVATE KEY" in (tmp_path / "node-a" / "tpm-keys.json").read_bytes()
    other = start_copy(manufacture(tmp_path / "other-state", manufacturer_ca), tmp_path / "b")
    try:
        shutil.copytree(tmp_path / "node-a", tmp_path / "node-b")
        stolen = TpmKeyManager(tmp_path / "node-b", other.tcti)
        with pytest.raises(KeyManagerError, match="signing with key 'agent-svid' failed"):
            stolen.signer("agent-svid").sign(b"x", ec.ECDSA(hashes.SHA256()))
    finally:
        other.kill()


def test_private_key_cannot_be_exported(swtpm: SwtpmProcess, tmp_path: Path) -> None:
    km = TpmKeyManager(tmp_path, swtpm.tcti)
    km.generate_key("k", KeyType.EC_P256)
    signer = km.signer("k")
    with pytest.raises(KeyManagerError, match="cannot be exported"):
        signer.private_numbers()


def test_tpm_gone_is_unavailable(swtpm: SwtpmProcess, tmp_path: Path) -> None:
    km = TpmKeyManager(tmp_path, swtpm.tcti)
    km.generate_key("k", KeyType.EC_P256)
    swtpm.kill()
    with pytest.raises(KeyManagerUnavailable, match="is not reachable"):
        km.signer("k").sign(b"x", ec.ECDSA(hashes.SHA256()))
    swtpm.start()
    km.signer("k").sign(b"x", ec.ECDSA(hashes.SHA256()))


def test_digests_are_checked_before_the_tpm_sees_them(swtpm: SwtpmProcess, tmp_path: Path) -> None:
    """The checks the HSM keys make (plastron/signing_digest.py), for TPM keys too."""
    km = TpmKeyManager(tmp_path, swtpm.tcti)
    km.generate_key("k", KeyType.EC_P256)
    signer = km.signer("k")
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    with pytest.raises(KeyManagerError, match="tpm: hash 'sha1' is not allowed"):
        signer.sign(b"x" * 20, ec.ECDSA(Prehashed(hashes.SHA1())))
    with pytest.raises(KeyManagerError, match="tpm: prehashed input is 31 bytes, sha256 needs 32"):
        signer.sign(b"x" * 31, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(KeyManagerError, match="tpm: refusing to sign 1048577 bytes"):
        signer.sign(b"x" * (MAX_SIGN_INPUT + 1), ec.ECDSA(hashes.SHA256()))
    digest = hashlib.sha256(b"message").digest()
    signature = signer.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    signer.public_key().verify(signature, b"message", ec.ECDSA(hashes.SHA256()))
