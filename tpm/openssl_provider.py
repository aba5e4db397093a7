"""Lets Python's ``ssl`` sign TLS handshakes with a TPM-resident key (tpm2-openssl provider).

Python's ``ssl`` loads a client key only from a PEM file, and it uses the system's shared
libcrypto (OpenSSL 3). tpm2-openssl is an OpenSSL 3 provider whose decoder reads a "TSS2 PRIVATE
KEY" PEM (the TPM-wrapped blob the ``tpm`` KeyManager stores) into a key that signs *inside the
TPM*. This module loads that provider into the default library context of the libcrypto that
``_ssl`` uses, so ``SSLContext.load_cert_chain`` accepts the blob and every CertificateVerify is
signed by the TPM. pyca/cryptography carries its own statically linked OpenSSL and is not
affected.

Why the default properties are ``?provider=tpm2,tpm2.digest!=yes``: OpenSSL 3.0 (Debian 12)
fetches the handshake's signature implementation by name, not from the key's provider, so
without a preference the default provider is asked to sign with a key it cannot see ("missing
private key"). Preferring tpm2 routes signatures to the TPM; ``tpm2.digest!=yes`` keeps message
digests (the TLS transcript, ``hashlib``) in software, because hashing in the TPM is slow and each
hash sequence takes one of its few object slots. Operations tpm2 does not offer fall back to the
default provider (the ``?`` makes the preference optional).

The provider and this process then share the TPM, so the TCTI must be resource-managed
(``device:/dev/tpmrm0`` or tpm2-abrmd): raw ``/dev/tpm0`` and swtpm serve one client at a time.
Process-wide and one TPM per process: the provider reads its TCTI once, at load.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import KeyManagerError
from plastron.tpm.tcti import Tcti

PROVIDER = "tpm2"
DEFAULT_PROPERTIES = b"?provider=tpm2,tpm2.digest!=yes"
_TCTI_ENV = "TPM2OPENSSL_TCTI"
_OPENSSL_INFO_MODULES_DIR = 1003  # openssl/crypto.h

_lock = threading.Lock()
_loaded: dict[str, Tcti] = {}  # "tcti" → the TPM the provider was loaded for


def _system_libcrypto() -> ctypes.CDLL:
    """The libcrypto that ``_ssl`` is linked against (mapped since ``ssl`` was imported)."""
    if ssl.OPENSSL_VERSION_INFO < (3, 0):
        raise KeyManagerError(
            f"tpm: TLS with a TPM key needs OpenSSL 3 under Python's ssl ({ssl.OPENSSL_VERSION})"
        )
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rsplit(maxsplit=1)[-1]
            if Path(path).name.startswith("libcrypto.so.3"):
                paths.add(path)
    if len(paths) != 1:
        raise KeyManagerError(
            "tpm: cannot tell which libcrypto Python's ssl uses "
            f"({', '.join(sorted(paths)) or 'none mapped: is ssl linked statically?'})"
        )
    # dlopen of a library already mapped returns that instance: the one _ssl calls into.
    lib = ctypes.CDLL(paths.pop())
    lib.OSSL_PROVIDER_load.restype = ctypes.c_void_p
    lib.OSSL_PROVIDER_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.EVP_set_default_properties.restype = ctypes.c_int
    lib.EVP_set_default_properties.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ERR_get_error.restype = ctypes.c_ulong
    lib.ERR_error_string_n.restype = None
    lib.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def check_verifiable(certificates: Sequence[x509.Certificate]) -> None:
    """Raise unless the TPM can check signatures by these certificates' keys.

    With tpm2 preferred, OpenSSL 3.0 also verifies the *server's* chain in the TPM, and TPMs
    implement RSA-2048 (3072 on some) and NIST P-256/P-384 only: a server CA on RSA-4096 or P-521
    would fail every handshake with an opaque "certificate signature failure"."""
    for cert in certificates:
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size in (2048, 3072):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in (
            "secp256r1",
            "secp384r1",
        ):
            continue
        kind = (
            f"RSA-{key.key_size}"
            if isinstance(key, rsa.RSAPublicKey)
            else getattr(getattr(key, "curve", None), "name", type(key).__name__)
        )
        subject = cert.subject.rfc4514_string() or "no subject"
        raise KeyManagerError(
            f"tpm: the server's chain has a {kind} key ({subject}); with KeyManager tpm the "
            "agent's TLS checks signatures in the TPM, which handles RSA-2048/3072 and EC "
            "P-256/P-384: use one of those for the server's CA (ca_key_type)"
        )


def check_available() -> None:
    """Raise unless ssl's OpenSSL can find the tpm2 provider module (for config checks)."""
    lib = _system_libcrypto()
    lib.OPENSSL_info.restype = ctypes.c_char_p
    lib.OPENSSL_info.argtypes = [ctypes.c_int]
    modules = (lib.OPENSSL_info(_OPENSSL_INFO_MODULES_DIR) or b"").decode()
    module = Path(os.environ.get("OPENSSL_MODULES") or modules) / f"{PROVIDER}.so"
    if not module.is_file():
        raise KeyManagerError(
            f"tpm: the OpenSSL provider {module} is missing; KeyManager tpm signs the agent's "
            "TLS handshakes through it (install the Debian package tpm2-openssl)"
        )


def _openssl_errors(lib: ctypes.CDLL) -> str:
    messages = []
    while code := lib.ERR_get_error():
        buf = ctypes.create_string_buffer(256)
        lib.ERR_error_string_n(code, buf, len(buf))
        messages.append(buf.value.decode(errors="replace"))
    return "; ".join(messages[-3:]) or "no OpenSSL error recorded"


def ensure_loaded(tcti: Tcti) -> None:
    """Load tpm2-openssl for ``tcti`` into ssl's libcrypto, once per process."""
    with _lock:
        loaded = _loaded.get("tcti")
        if loaded is not None:
            if loaded != tcti:
                raise KeyManagerError(
                    f"tpm: the TLS provider already serves TPM {loaded}; one process "
                    f"cannot use a second TPM ({tcti}) for TLS"
                )
            return
        if not tcti.resource_managed:
            raise KeyManagerError(
                f"tpm: tcti {tcti} serves one client at a time, but the TLS stack and the "
                "agent share the TPM; use a resource manager: device:/dev/tpmrm0 or tabrmd"
            )
        lib = _system_libcrypto()
        os.environ[_TCTI_ENV] = str(tcti)  # read by the provider when it initialises
        for name in ("default", PROVIDER):
            if not lib.OSSL_PROVIDER_load(None, name.encode()):
                raise KeyManagerError(
                    f"tpm: cannot load the OpenSSL provider {name!r} "
                    f"(Debian package tpm2-openssl for 'tpm2'): {_openssl_errors(lib)}"
                )
        if lib.EVP_set_default_properties(None, DEFAULT_PROPERTIES) != 1:
            raise KeyManagerError(
                f"tpm: cannot set OpenSSL default properties: {_openssl_errors(lib)}"
            )
        _loaded["tcti"] = tcti
