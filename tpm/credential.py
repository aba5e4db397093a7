"""TPM2_MakeCredential in pure ``cryptography``: the server side of credential activation.

The result can only be opened by TPM2_ActivateCredential on the TPM that holds the EK, and only
for the key whose name was bound in (the AK). TPM 2.0 Part 1 §24 (credential protection) and
Part 1 §11.4.10 (KDFa/KDFe):

  seed       RSA EK: random |H|, RSA-OAEP(H, label "IDENTITY\\0");  ECC EK: ECDH + KDFe
  symKey     KDFa(H, seed, "STORAGE", name, "", bits(sym))
  encIdentity AES-CFB(symKey, IV=0, TPM2B(credential))
  hmacKey    KDFa(H, seed, "INTEGRITY", "", "", |H| bits)
  outerHMAC  HMAC_H(hmacKey, encIdentity || name)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from plastron.errors import AttestationFailed
from plastron.tpm.structures import ALG_AES, ALG_CFB, ALG_ECC, ALG_RSA, TpmPublic, hash_name, tpm2b

IDENTITY_LABEL = b"IDENTITY\x00"
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _hash(alg: int) -> hashes.HashAlgorithm:
    return _HASHES[hash_name(alg)]()


def kdfa(alg: int, key: bytes, label: bytes, context: bytes, *, bits: int) -> bytes:
    """SP 800-108 counter-mode HMAC KDF as the TPM uses it; ``context`` = contextU || contextV."""
    return KBKDFHMAC(
        algorithm=_hash(alg),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)


def kdfe(alg: int, z: bytes, use: bytes, party_u: bytes, party_v: bytes, *, bits: int) -> bytes:
    """SP 800-56A concatenation KDF: H(counter || Z || use || partyU || partyV)."""
    return ConcatKDFHash(
        algorithm=_hash(alg), length=bits // 8, otherinfo=use + party_u + party_v
    ).derive(z)


@dataclass(frozen=True)
class Credential:
    """What the agent must activate: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET (marshalled)."""

    id_object: bytes
    encrypted_secret: bytes


def _seed_rsa(ek: TpmPublic, digest_size: int) -> tuple[bytes, bytes]:
    key = ek.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    seed = os.urandom(digest_size)
    h = _hash(ek.name_alg)
    pad = padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=IDENTITY_LABEL)
    return seed, key.encrypt(seed, pad)


def _seed_ecc(ek: TpmPublic, digest_size: int) -> tuple[bytes, bytes]:
    key = ek.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    eph = ec.generate_private_key(key.curve)
    z = eph.exchange(ec.ECDH(), key)
    size = (key.curve.key_size + 7) // 8
    nums = eph.public_key().public_numbers()
    eph_x, eph_y = nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
    ek_x = key.public_numbers().x.to_bytes(size, "big")
    seed = kdfe(ek.name_alg, z, IDENTITY_LABEL, eph_x, ek_x, bits=digest_size * 8)
    # TPMS_ECC_POINT of the ephemeral key is the "encrypted" secret.
    return seed, tpm2b(eph_x) + tpm2b(eph_y)


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes) -> Credential:
    """Wrap ``secret`` so that only ActivateCredential(AK named ``ak_name``, this EK) opens it."""
    h = _hash(ek.name_alg)
    if not 0 < len(secret) <= h.digest_size:
        raise ValueError(f"credential must be 1..{h.digest_size} bytes (got {len(secret)})")
    if ek.sym_alg != ALG_AES or ek.sym_mode != ALG_CFB:
        raise AttestationFailed(
            f"tpm: EK symmetric scheme 0x{ek.sym_alg:04x}/0x{ek.sym_mode:04x} is not AES-CFB"
        )
    if ek.type == ALG_RSA:
        seed, enc_secret = _seed_rsa(ek, h.digest_size)
    elif ek.type == ALG_ECC:
        seed, enc_secret = _seed_ecc(ek, h.digest_size)
    else:
        raise AttestationFailed(f"tpm: EK type 0x{ek.type:04x} cannot receive a credential")
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", ak_name, bits=ek.sym_bits)
    enc = Cipher(algorithms.AES(sym_key), CFB(b"\x00" * 16)).encryptor()
    enc_identity = enc.update(tpm2b(secret)) + enc.finalize()
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", bits=h.digest_size * 8)
    mac = hmac.HMAC(hmac_key, _hash(ek.name_alg))
    mac.update(enc_identity + ak_name)
    outer = mac.finalize()
    id_object = tpm2b(tpm2b(outer) + enc_identity)
    return Credential(id_object=id_object, encrypted_secret=tpm2b(enc_secret))
