"""The digest a hardware-held key is asked to sign: computed here, checked and bounded.

HSM and TPM keys sign a digest the caller computes (one mechanism per key family works on every
module and TPM), so both check the same things before anything reaches the device: a hash
from the allowed set, a bounded input, a prehashed value of exactly the digest's length, and
never a signature without a DigestInfo.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.utils import Buffer

from plastron.errors import KeyManagerError

#: Largest message accepted for signing (a TBSCertificate with many SANs is a few KiB).
MAX_SIGN_INPUT = 1 << 20
ALLOWED_HASHES = frozenset({"sha256", "sha384", "sha512"})


def signing_digest(
    data: Buffer, algorithm: hashes.HashAlgorithm | Prehashed | NoDigestInfo, *, who: str
) -> tuple[bytes, hashes.HashAlgorithm]:
    """(digest, hash) for ``data``, hashing it unless it is already a digest.

    ``who`` names the key manager in the error (``pkcs11``, ``tpm``).
    """
    if isinstance(algorithm, NoDigestInfo):
        raise KeyManagerError(f"{who}: signing without a DigestInfo is not allowed")
    raw = bytes(data)
    if len(raw) > MAX_SIGN_INPUT:
        raise KeyManagerError(f"{who}: refusing to sign {len(raw)} bytes (max {MAX_SIGN_INPUT})")
    inner = algorithm._algorithm if isinstance(algorithm, Prehashed) else algorithm
    if not isinstance(inner, hashes.HashAlgorithm) or inner.name not in ALLOWED_HASHES:
        name = getattr(inner, "name", type(inner).__name__)
        raise KeyManagerError(f"{who}: hash {name!r} is not allowed; use sha256/384/512")
    if isinstance(algorithm, Prehashed):
        if len(raw) != inner.digest_size:
            raise KeyManagerError(
                f"{who}: prehashed input is {len(raw)} bytes, {inner.name} needs"
                f" {inner.digest_size}"
            )
        return raw, inner
    # hashlib over the same OpenSSL, without building a Hash context object: a few µs less
    # on every CA signature, which an HSM-signed SVID pays once
    return hashlib.new(inner.name, raw).digest(), inner
