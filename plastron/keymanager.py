"""The KeyManager plugin protocol, and the ``memory`` and ``disk`` implementations.

A KeyManager holds private keys by id (``x509-CA-A``, ``JWT-Signer-B``, ``agent-svid-A``) and
hands out a ``cryptography`` private-key object whose ``sign()`` runs where the key lives, so
``CertificateBuilder.sign`` and PyJWT sign through an HSM or TPM unchanged.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import stat
import string
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from plastron.errors import ConfigError, InvalidArgument, KeyManagerError, NotFound
from plastron.wire.keys import spki_der

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@runtime_checkable
class TlsProviderKey(Protocol):
    """A non-exportable key that Python's ``ssl`` can still use for a handshake, through an
    OpenSSL provider (the ``tpm`` KeyManager's keys, via tpm2-openssl)."""

    def tls_key_pem(self) -> bytes:
        """A PEM the provider decodes into a handle on the key (never the key itself); makes
        sure the provider is loaded first."""
        ...

    def check_peer_keys(self, certificates: Sequence[x509.Certificate]) -> None:
        """Raise unless TLS can still verify signatures by these keys once the provider is in
        use (it may take over signature checks too)."""
        ...


class KeyType(enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"

    @classmethod
    def parse(cls, text: str) -> KeyType:
        for kt in cls:
            if kt.value == text:
                return kt
        allowed = ", ".join(kt.value for kt in cls)
        raise ConfigError(f"unknown key type {text!r}; expected one of {allowed}")


@dataclass(frozen=True)
class KeyInfo:
    """A key's id, type and public half; fingerprint = sha256 hex of the SPKI DER."""

    key_id: str
    key_type: KeyType
    public_key: PublicKey
    fingerprint: str


@runtime_checkable
class KeyManager(Protocol):
    """Holds private keys by id. Blocking implementations are called via an executor."""

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        """Create (or replace) the key ``key_id``; return its public key."""
        ...

    def get_public_key(self, key_id: str) -> PublicKey:
        """The public key for ``key_id``; raises NotFound if there is none."""
        ...

    def get_public_keys(self) -> list[KeyInfo]:
        """Every key this manager holds."""
        ...

    def signer(self, key_id: str) -> PrivateKey:
        """A cryptography private-key object for ``key_id`` whose sign() runs in the key store."""
        ...

    def destroy_key(self, key_id: str) -> None:
        """Remove ``key_id``; no-op if absent."""
        ...


#: Opens, in another process, a KeyManager over the same key store (see :func:`worker_opener`).
KeyManagerOpener = Callable[[], KeyManager]

# ---- optional capabilities: a KeyManager (or any plugin) has them or not; callers test with
# isinstance, so an implementation declares a capability by having the method or attribute.


@runtime_checkable
class BlockingKeyManager(Protocol):
    """Its calls block (an HSM round trip) when ``blocking`` is true: callers run them in an
    executor, never on the event loop."""

    blocking: bool


@runtime_checkable
class Closeable(Protocol):
    """Holds something (a token session, a connection) to release when its owner stops."""

    def close(self) -> None: ...


@runtime_checkable
class ForgettingKeyManager(Protocol):
    """Caches what it found about a key; ``forget`` drops that, for a key another process may
    have replaced."""

    def forget(self, key_id: str) -> None: ...


@runtime_checkable
class WorkerOpenableKeyManager(Protocol):
    """Its keys live outside the process (an HSM), so a worker process can open the same key
    store on its own (see :func:`worker_opener`)."""

    def worker_opener(self) -> KeyManagerOpener: ...


def is_blocking(plugin: object) -> bool:
    return isinstance(plugin, BlockingKeyManager) and bool(plugin.blocking)


def close_if_closeable(plugin: object) -> None:
    if isinstance(plugin, Closeable):
        plugin.close()


def worker_opener(key_manager: KeyManager) -> KeyManagerOpener | None:
    """How a worker process reaches ``key_manager``'s keys on its own, if it can.

    A KeyManager whose keys live outside the process (an HSM: the worker logs in to the same
    token with its own session) offers ``worker_opener()``, returning a picklable callable that
    opens it again there; the key material never travels. Memory, disk and TPM managers offer
    none, and their keys are used in this process only."""
    if isinstance(key_manager, WorkerOpenableKeyManager):
        return key_manager.worker_opener()
    return None


# Key ids become part of PKCS#11 labels and file-backed indexes; a closed alphabet and a
# length bound keep them from carrying path separators or control characters anywhere.
MAX_KEY_ID_LENGTH = 128
_KEY_ID_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


def check_key_id(key_id: object) -> str:
    """Return ``key_id`` if it is 1..128 characters of ``[A-Za-z0-9._-]``, else InvalidArgument."""
    if not isinstance(key_id, str):
        raise InvalidArgument(f"key id must be a string, not {type(key_id).__name__}")
    if not key_id:
        raise InvalidArgument("key id is required (empty)")
    if len(key_id) > MAX_KEY_ID_LENGTH:
        raise InvalidArgument(
            f"key id is longer than {MAX_KEY_ID_LENGTH} characters ({key_id[:32]!r}...)"
        )
    bad = next((ch for ch in key_id if ch not in _KEY_ID_CHARS), None)
    if bad is not None:
        raise InvalidArgument(
            f"key id {key_id!r} may contain only letters, digits, '.', '_' and '-' (found {bad!r})"
        )
    if key_id in (".", ".."):
        raise InvalidArgument(f"key id {key_id!r} is reserved")
    return key_id


def check_key_type(key_type: object) -> KeyType:
    if not isinstance(key_type, KeyType):
        raise InvalidArgument(f"key type must be a KeyType, not {key_type!r}")
    return key_type


def fingerprint(public_key: PublicKey) -> str:
    """sha256 hex of the SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def key_type_of(key: PublicKey | PrivateKey) -> KeyType:
    """The KeyType of a key object; KeyManagerError for curves and sizes Plastron does not use."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.EC_P256
        if isinstance(key.curve, ec.SECP384R1):
            return KeyType.EC_P384
        raise KeyManagerError(f"unsupported elliptic curve {key.curve.name!r}")
    if key.key_size == 2048:
        return KeyType.RSA_2048
    if key.key_size == 4096:
        return KeyType.RSA_4096
    raise KeyManagerError(f"unsupported RSA key size {key.key_size}")


def new_private_key(key_type: KeyType) -> PrivateKey:
    """A fresh software key of ``key_type`` (memory and disk managers)."""
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = 2048 if key_type is KeyType.RSA_2048 else 4096
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def prove_possession(key: PrivateKey, public_key: PublicKey) -> None:
    """Sign a random challenge with ``key`` and verify it with ``public_key``: proves a stored
    key still works here (a TPM-wrapped key copied to another machine does not).
    Raises KeyManagerError naming what failed."""
    challenge = os.urandom(32)
    try:
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
            public_key, ec.EllipticCurvePublicKey
        ):
            signature = key.sign(challenge, ec.ECDSA(hashes.SHA256()))
            public_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPrivateKey) and isinstance(public_key, rsa.RSAPublicKey):
            signature = key.sign(challenge, padding.PKCS1v15(), hashes.SHA256())
            public_key.verify(signature, challenge, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise KeyManagerError("the key and the public key are of different types")
    except InvalidSignature:
        raise KeyManagerError("the key's signature does not verify with its public key") from None


def key_info(key_id: str, public_key: PublicKey) -> KeyInfo:
    return KeyInfo(key_id, key_type_of(public_key), public_key, fingerprint(public_key))


class _KeysInProcess:
    """The reads the memory and disk managers share: their keys are a dict under a lock."""

    _keys: dict[str, PrivateKey]
    _lock: threading.Lock

    def _not_found(self, key_id: str) -> str:
        return f"key {key_id!r} not found"

    def get_public_key(self, key_id: str) -> PublicKey:
        return self.signer(key_id).public_key()

    def get_public_keys(self) -> list[KeyInfo]:
        with self._lock:
            items = sorted(self._keys.items())
        return [key_info(kid, key.public_key()) for kid, key in items]

    def signer(self, key_id: str) -> PrivateKey:
        check_key_id(key_id)
        with self._lock:
            key = self._keys.get(key_id)
        if key is None:
            raise NotFound(self._not_found(key_id))
        return key


class MemoryKeyManager(_KeysInProcess):
    """Keys in process memory only: lost on restart (SPIRE's ``memory`` KeyManager)."""

    name = "memory"

    def __init__(self) -> None:
        self._keys: dict[str, PrivateKey] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryKeyManager(keys={sorted(self._keys)})"

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        check_key_id(key_id)
        key = new_private_key(check_key_type(key_type))
        with self._lock:
            self._keys[key_id] = key
        return key.public_key()

    def destroy_key(self, key_id: str) -> None:
        check_key_id(key_id)
        with self._lock:
            self._keys.pop(key_id, None)


class DiskKeyManager(_KeysInProcess):
    """Keys persisted as unencrypted PKCS#8 PEM in ``<directory>/keys.json`` (SPIRE's ``disk``).

    The file is 0600 inside a directory that only its owner may write; every change rewrites the
    whole file through a temp file + fsync + rename, so a crash leaves the old or the new set,
    never a torn one. Only ``keys.json`` and its temp files are ever written, always inside
    ``directory``: key ids live in the JSON, never in a path.
    """

    name = "disk"
    FILE_NAME = "keys.json"
    # Bound on keys.json: ~3.3 KiB per RSA-4096 key, so room for a few thousand keys.
    MAX_FILE_BYTES = 8 * 1024 * 1024
    _FORMAT_VERSION = 1

    def __init__(self, directory: Path | str) -> None:
        self._dir = Path(directory)
        self._path = self._dir / self.FILE_NAME
        self._lock = threading.Lock()
        self._prepare_directory()
        self._keys = self._load()

    def __repr__(self) -> str:
        return f"DiskKeyManager(directory={str(self._dir)!r}, keys={sorted(self._keys)})"

    @property
    def path(self) -> Path:
        return self._path

    def generate_key(self, key_id: str, key_type: KeyType) -> PublicKey:
        check_key_id(key_id)
        key = new_private_key(check_key_type(key_type))
        with self._lock:
            updated = dict(self._keys)
            updated[key_id] = key
            self._save(updated)  # memory changes only once the disk holds the new set
            self._keys = updated
        return key.public_key()

    def _not_found(self, key_id: str) -> str:
        return f"key {key_id!r} not found in {str(self._path)!r}"

    def destroy_key(self, key_id: str) -> None:
        check_key_id(key_id)
        with self._lock:
            if key_id not in self._keys:
                return
            updated = {k: v for k, v in self._keys.items() if k != key_id}
            self._save(updated)
            self._keys = updated

    def _prepare_directory(self) -> None:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.stat(self._dir)
        except OSError as exc:
            raise KeyManagerError(
                f"disk: cannot use key directory {str(self._dir)!r}: {exc.strerror}"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise KeyManagerError(f"disk: {str(self._dir)!r} is not a directory")
        # Anyone else who can write the directory could swap keys.json for their own keys.
        if st.st_mode & 0o022:
            raise KeyManagerError(
                f"disk: key directory {str(self._dir)!r} has mode {stat.S_IMODE(st.st_mode):04o};"
                " it must not be writable by group or others"
            )
        if st.st_uid != os.geteuid():
            raise KeyManagerError(
                f"disk: key directory {str(self._dir)!r} is owned by uid {st.st_uid},"
                f" not by this process (uid {os.geteuid()})"
            )

    def _read_file(self) -> bytes | None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyManagerError(
                f"disk: cannot open {str(self._path)!r}: {exc.strerror}"
            ) from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_mode & 0o077:
            problem = (
                f"has mode {stat.S_IMODE(st.st_mode):04o};"
                " it must not be accessible by group or others (0600)"
            )
        if problem:
            os.close(fd)
            raise KeyManagerError(f"disk: {str(self._path)!r} {problem}")
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(self.MAX_FILE_BYTES + 1)
        if len(data) > self.MAX_FILE_BYTES:
            raise KeyManagerError(
                f"disk: {str(self._path)!r} is larger than {self.MAX_FILE_BYTES} bytes"
            )
        return data

    def _load(self) -> dict[str, PrivateKey]:
        data = self._read_file()
        if data is None:
            return {}
        where = repr(str(self._path))
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise KeyManagerError(f"disk: {where} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != self._FORMAT_VERSION:
            raise KeyManagerError(f"disk: {where} is not a version-1 Plastron keys file")
        entries = doc.get("keys")
        if not isinstance(entries, dict):
            raise KeyManagerError(f'disk: {where} has no "keys" object')
        keys: dict[str, PrivateKey] = {}
        for key_id, entry in entries.items():
            try:
                check_key_id(key_id)
            except InvalidArgument as exc:
                raise KeyManagerError(f"disk: {where}: {exc}") from None
            keys[key_id] = _decode_entry(key_id, entry, where)
        return keys

    def _save(self, keys: dict[str, PrivateKey]) -> None:
        doc = {
            "version": self._FORMAT_VERSION,
            "keys": {kid: _encode_entry(key) for kid, key in sorted(keys.items())},
        }
        payload = json.dumps(doc, indent=1).encode()
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{self.FILE_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
            _fsync_directory(self._dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise KeyManagerError(
                f"disk: cannot write {str(self._path)!r}: {exc.strerror}"
            ) from None


def _encode_entry(key: PrivateKey) -> dict[str, str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {"type": key_type_of(key).value, "private_key": pem.decode("ascii")}


def _decode_entry(key_id: str, entry: object, where: str) -> PrivateKey:
    """One keys.json entry back to a key; errors name the file and id, never the key bytes."""
    if not isinstance(entry, dict):
        raise KeyManagerError(f"disk: {where}: entry for key {key_id!r} is not an object")
    type_text, pem = entry.get("type"), entry.get("private_key")
    if not isinstance(type_text, str) or not isinstance(pem, str):
        raise KeyManagerError(f'disk: {where}: key {key_id!r} lacks "type" or "private_key"')
    try:
        key_type = KeyType.parse(type_text)
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ConfigError, ValueError, TypeError, UnicodeEncodeError):
        raise KeyManagerError(f"disk: {where}: key {key_id!r} cannot be loaded") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyManagerError(f"disk: {where}: key {key_id!r} is not an EC or RSA key")
    if key_type_of(key) is not key_type:
        raise KeyManagerError(
            f"disk: {where}: key {key_id!r} is recorded as {key_type.value}"
            f" but holds a {key_type_of(key).value} key"
        )
    return key


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable: the new directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
