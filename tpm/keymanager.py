"""KeyManager ``tpm`` (agent): keys created in the TPM under the owner-hierarchy SRK.

Each key is kept in ``<data_dir>/tpm-keys.json`` as a "TSS2 PRIVATE KEY" PEM (the tpm2-openssl /
tpm2-tss-engine format): the private part is wrapped by the SRK of *this* TPM, so a copied
data_dir is useless on another machine. ``signer()`` returns a ``cryptography`` private key whose
``sign()`` loads the key and signs inside the TPM (CertificateBuilder, CSR builder, PyJWT work).
Supported: EC P-256, EC P-384, RSA-2048. Every method blocks; call it from an executor.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Self

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC, TPM2_RH, TPM2_ST
from tpm2_pytss.tsskey import TSSPrivKey
from tpm2_pytss.types import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK

from plastron.errors import InvalidArgument, KeyManagerError, KeyManagerUnavailable, NotFound
from plastron.keymanager import (
    KeyInfo,
    KeyType,
    PrivateKey,
    PublicKey,
    check_key_id,
    check_key_type,
    key_info,
)
from plastron.signing_digest import signing_digest
from plastron.tpm import openssl_provider
from plastron.tpm.device import TpmDevice
from plastron.tpm.structures import parse_tpm2b_public
from plastron.tpm.tcti import DEFAULT_TCTI, Tcti

Buffer = bytes | bytearray | memoryview
FILE_NAME = "tpm-keys.json"
MAX_FILE_BYTES = 4 * 1024 * 1024
SUPPORTED = (KeyType.EC_P256, KeyType.EC_P384, KeyType.RSA_2048)
_HASH_ALGS = {"sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384, "sha512": TPM2_ALG.SHA512}


class TpmKeyManager:
    name = "tpm"

    def __init__(self, data_dir: Path | str, tcti: str | Tcti = DEFAULT_TCTI) -> None:
        self._dir = Path(data_dir)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = self._dir / FILE_NAME
        self._device = TpmDevice(tcti)
        self._lock = threading.Lock()
        self._blobs: dict[str, str] = self._load()

    def __repr__(self) -> str:
        return f"TpmKeyManager(tcti={self._device.tcti}, keys={sorted(self._blobs)})"

    # ---- storage ---------------------------------------------------------------------------

    def _load(self) -> dict[str, str]:
        if not self._path.exists():
            return {}
        if self._path.stat().st_size > MAX_FILE_BYTES:
            raise KeyManagerError(f"tpm: {self._path} is larger than {MAX_FILE_BYTES} bytes")
        try:
            data = json.loads(self._path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyManagerError(f"tpm: cannot read {self._path} ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise KeyManagerError(f"tpm: {self._path} is not a key_id → PEM object")
        for key_id in data:
            check_key_id(key_id)
        return dict(data)

    def _save(self, blobs: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tpm-keys.", dir=self._dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(blobs, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _blob(self, key_id: str) -> TSSPrivKey:
        check_key_id(key_id)
        with self._lock:
            pem = self._blobs.get(key_id)
        if pem is None:
            raise NotFound(f"key {key_id!r} not found in {str(self._path)!r}")
        return TSSPrivKey.from_pem(pem.encode())

    # ---- KeyManager ------------------------------------------------------------------------

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        check_key_id(key_id)
        kt = check_key_type(key_type)
        if kt not in SUPPORTED:
            raise InvalidArgument(
                f"tpm: key type {kt.value} is not supported; use "
                + ", ".join(k.value for k in SUPPORTED)
            )

        def work(ctx: ESAPI) -> TSSPrivKey:
            if kt is KeyType.RSA_2048:
                return TSSPrivKey.create_rsa(ctx, keyBits=2048)
            curve = TPM2_ECC.NIST_P256 if kt is KeyType.EC_P256 else TPM2_ECC.NIST_P384
            return TSSPrivKey.create_ecc(ctx, curveID=curve)

        key = self._device.run(
            f"creating key {key_id!r}", work, KeyManagerError, KeyManagerUnavailable
        )
        pem = key.to_pem().decode()
        with self._lock:
            updated = dict(self._blobs)
            updated[key_id] = pem
            self._save(updated)
            self._blobs = updated
        return _public_of(key)

    def get_public_key(self, key_id: str) -> PublicKey:
        return _public_of(self._blob(key_id))

    def get_public_keys(self) -> list[KeyInfo]:
        with self._lock:
            items = sorted(self._blobs.items())
        return [key_info(k, _public_of(TSSPrivKey.from_pem(v.encode()))) for k, v in items]

    def signer(self, key_id: str) -> PrivateKey:
        blob = self._blob(key_id)
        public = _public_of(blob)
        if isinstance(public, ec.EllipticCurvePublicKey):
            return TpmEcPrivateKey(self._device, key_id, blob.load, public, tls_blob=blob)
        return TpmRsaPrivateKey(self._device, key_id, blob.load, public, tls_blob=blob)

    def destroy_key(self, key_id: str) -> None:
        check_key_id(key_id)
        with self._lock:
            if key_id not in self._blobs:
                return
            updated = {k: v for k, v in self._blobs.items() if k != key_id}
            self._save(updated)
            self._blobs = updated


def _public_of(key: TSSPrivKey) -> PublicKey:
    return parse_tpm2b_public(key.public.marshal()).public_key()


#: Loads a key into the TPM and returns its handle (flushed by the caller after one use).
KeyLoader = Callable[[ESAPI], ESYS_TR]


def _tpm_sign(device: TpmDevice, key_id: str, load: KeyLoader, digest: bytes, scheme: Any) -> Any:
    """Load the key, sign ``digest`` in the TPM, flush; returns TPMT_SIGNATURE."""
    ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)

    def work(ctx: ESAPI) -> Any:
        handle = load(ctx)
        with TpmDevice.loaded(ctx, handle):
            return ctx.sign(handle, digest, scheme, ticket)

    return device.run(f"signing with key {key_id!r}", work, KeyManagerError, KeyManagerUnavailable)


class _TpmResident:
    """What both key families share: where the key lives (``load`` puts it in the TPM: a TSS
    key file for the KeyManager, a DevID blob under the SRK for provisioning), and nothing to
    export but the TPM-wrapped TSS blob, for TLS through tpm2-openssl (see openssl_provider)."""

    def __init__(
        self, device: TpmDevice, key_id: str, load: KeyLoader, tls_blob: TSSPrivKey | None
    ) -> None:
        self._device, self._key_id, self._load, self._blob = device, key_id, load, tls_blob

    def _sign(self, digest: bytes, scheme: Any) -> Any:
        return _tpm_sign(self._device, self._key_id, self._load, digest, scheme)

    def private_numbers(self) -> NoReturn:
        raise KeyManagerError("tpm: TPM keys cannot be exported")

    def private_bytes(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise KeyManagerError("tpm: TPM keys cannot be exported")

    def tls_key_pem(self) -> bytes:
        """The TPM-wrapped blob for Python's ssl, after loading tpm2-openssl for this TPM."""
        if self._blob is None:
            raise KeyManagerError(f"tpm: key {self._key_id!r} has no TSS key file for TLS")
        openssl_provider.ensure_loaded(self._device.tcti)
        pem: bytes = self._blob.to_pem()
        return pem

    def check_peer_keys(self, certificates: Sequence[x509.Certificate]) -> None:
        openssl_provider.check_verifiable(certificates)

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class TpmEcPrivateKey(_TpmResident, ec.EllipticCurvePrivateKey):
    """An EC key that lives in the TPM; ``sign`` runs there."""

    def __init__(
        self,
        device: TpmDevice,
        key_id: str,
        load: KeyLoader,
        public: ec.EllipticCurvePublicKey,
        tls_blob: TSSPrivKey | None = None,
    ) -> None:
        super().__init__(device, key_id, load, tls_blob)
        self._public = public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise KeyManagerError("tpm: EC keys sign only ECDSA")
        digest, h = signing_digest(data, signature_algorithm.algorithm, who="tpm")
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = _HASH_ALGS[h.name]
        sig = self._sign(digest, scheme)
        r = int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big")
        s = int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big")
        return utils.encode_dss_signature(r, s)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise KeyManagerError("tpm: agent keys sign only; ECDH is not offered")

    def __repr__(self) -> str:
        return f"TpmEcPrivateKey(key_id={self._key_id!r}, curve={self.curve.name})"


class TpmRsaPrivateKey(_TpmResident, rsa.RSAPrivateKey):
    """An RSA key that lives in the TPM: PKCS#1 v1.5 or PSS (salt = digest length)."""

    def __init__(
        self,
        device: TpmDevice,
        key_id: str,
        load: KeyLoader,
        public: rsa.RSAPublicKey,
        tls_blob: TSSPrivKey | None = None,
    ) -> None:
        super().__init__(device, key_id, load, tls_blob)
        self._public = public

    def sign(self, data: bytes, padding: asym_padding.AsymmetricPadding, algorithm: Any) -> bytes:
        digest, h = signing_digest(data, algorithm, who="tpm")
        if isinstance(padding, asym_padding.PKCS1v15):
            scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA)
        elif isinstance(padding, asym_padding.PSS) and padding._salt_length in (
            asym_padding.PSS.DIGEST_LENGTH,
            h.digest_size,
        ):
            scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSAPSS)
        else:
            raise KeyManagerError("tpm: RSA signing needs PKCS1v15 or PSS with digest-length salt")
        scheme.details.any.hashAlg = _HASH_ALGS[h.name]
        sig = self._sign(digest, scheme)  # keep it referenced: the fields below point into it
        return bytes(sig.signature.rsassa.sig)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: asym_padding.AsymmetricPadding) -> bytes:
        raise KeyManagerError("tpm: agent keys sign only; decryption is not offered")

    def __repr__(self) -> str:
        return f"TpmRsaPrivateKey(key_id={self._key_id!r}, bits={self.key_size})"
