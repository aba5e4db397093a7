"""TPM 2.0 wire structures parsed in pure Python, every length bounded.

Only the structures the server needs to read are here: TPM2B_PUBLIC/TPMT_PUBLIC (RSA and ECC
keys), TPMS_ATTEST (quote and certify), TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA). Parsers consume
exactly their input: trailing bytes are an error, so one blob has one meaning.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plastron.errors import AttestationFailed

# TPM2_ALG_ID values (TPM 2.0 Part 2, table 9).
ALG_RSA = 0x0001
ALG_SHA1 = 0x0004
ALG_AES = 0x0006
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_NULL = 0x0010
ALG_RSASSA = 0x0014
ALG_RSAPSS = 0x0016
ALG_ECDSA = 0x0018
ALG_ECDAA = 0x001A
ALG_ECC = 0x0023
ALG_CFB = 0x0043

ECC_NIST_P256 = 0x0003
ECC_NIST_P384 = 0x0004
ECC_NIST_P521 = 0x0005

# TPMA_OBJECT bits.
FIXED_TPM = 0x00000002
FIXED_PARENT = 0x00000010
SENSITIVE_DATA_ORIGIN = 0x00000020
USER_WITH_AUTH = 0x00000040
ADMIN_WITH_POLICY = 0x00000080
RESTRICTED = 0x00010000
DECRYPT = 0x00020000
SIGN_ENCRYPT = 0x00040000

TPM_GENERATED_VALUE = 0xFF544347
ST_ATTEST_CERTIFY = 0x8017
ST_ATTEST_QUOTE = 0x8018

HASH_BY_ALG = {ALG_SHA1: "sha1", ALG_SHA256: "sha256", ALG_SHA384: "sha384", ALG_SHA512: "sha512"}
CURVE_BY_ID: dict[int, type[ec.EllipticCurve]] = {
    ECC_NIST_P256: ec.SECP256R1,
    ECC_NIST_P384: ec.SECP384R1,
    ECC_NIST_P521: ec.SECP521R1,
}
# Schemes whose details are just a hash algorithm (ECDAA adds a count).
_HASH_SCHEMES = frozenset(
    {ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA, 0x0017, 0x0019, 0x001B, 0x001C, 0x001D}
)
_KDF_SCHEMES = frozenset({0x0007, 0x0020, 0x0021, 0x0022})

MAX_PUBLIC = 1024
MAX_ATTEST = 1024
MAX_DIGEST = 64
MAX_NAME = 2 + MAX_DIGEST
MAX_RSA_BYTES = 512
MAX_ECC_COORD = 66
MAX_PCR_BANKS = 4
MAX_PCR_SELECT = 4


class Reader:
    """Big-endian reader that refuses to run past its buffer."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise AttestationFailed(
                f"tpm: {self._what} is truncated (need {n} bytes at offset {self._pos})"
            )
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self, limit: int, field: str) -> bytes:
        size = self.u16()
        if size > limit:
            raise AttestationFailed(
                f"tpm: {self._what} field {field} is {size} bytes; at most {limit} allowed"
            )
        return self.take(size)

    def end(self) -> None:
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
            raise AttestationFailed(f"tpm: {self._what} has {extra} trailing bytes")


@dataclass(frozen=True)
class Scheme:
    alg: int
    hash_alg: int = ALG_NULL


@dataclass(frozen=True)
class TpmPublic:
    """A TPMT_PUBLIC for an RSA or ECC key; ``raw`` is its marshalled form (hashed into names)."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    sym_alg: int
    sym_bits: int
    sym_mode: int
    scheme: Scheme
    rsa_bits: int = 0
    rsa_exponent: int = 0
    rsa_modulus: bytes = b""
    curve: int = 0
    kdf: Scheme = Scheme(ALG_NULL)
    ecc_x: bytes = b""
    ecc_y: bytes = b""

    def has(self, attribute_bits: int) -> bool:
        return self.attributes & attribute_bits == attribute_bits

    @property
    def name(self) -> bytes:
        """TPM name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC)."""
        return (
            struct.pack(">H", self.name_alg)
            + hashlib.new(hash_name(self.name_alg), self.raw).digest()
        )

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        try:
            if self.type == ALG_RSA:
                e = self.rsa_exponent or 65537
                return rsa.RSAPublicNumbers(e, int.from_bytes(self.rsa_modulus, "big")).public_key()
            curve = CURVE_BY_ID[self.curve]()
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(self.ecc_x, "big"), int.from_bytes(self.ecc_y, "big"), curve
            ).public_key()
        except (ValueError, KeyError) as exc:
            raise AttestationFailed(f"tpm: public area does not hold a valid key ({exc})") from None


def hash_name(alg: int) -> str:
    try:
        return HASH_BY_ALG[alg]
    except KeyError:
        raise AttestationFailed(f"tpm: hash algorithm 0x{alg:04x} is not supported") from None


def _scheme(r: Reader, allowed: frozenset[int]) -> Scheme:
    alg = r.u16()
    if alg == ALG_NULL:
        return Scheme(ALG_NULL)
    if alg == ALG_ECDAA:
        h = r.u16()
        r.u16()  # count
        return Scheme(alg, h)
    if alg not in allowed:
        raise AttestationFailed(f"tpm: scheme 0x{alg:04x} is not supported")
    return Scheme(alg, r.u16())


def parse_tpmt_public(data: bytes) -> TpmPublic:
    if len(data) > MAX_PUBLIC:
        raise AttestationFailed(f"tpm: TPMT_PUBLIC is {len(data)} bytes; at most {MAX_PUBLIC}")
    r = Reader(data, "TPMT_PUBLIC")
    kind, name_alg, attrs = r.u16(), r.u16(), r.u32()
    policy = r.tpm2b(MAX_DIGEST, "authPolicy")
    sym_alg = r.u16()
    sym_bits = sym_mode = 0
    if sym_alg != ALG_NULL:
        sym_bits, sym_mode = r.u16(), r.u16()
    scheme = _scheme(r, _HASH_SCHEMES)
    common = dict(
        raw=data, type=kind, name_alg=name_alg, attributes=attrs, auth_policy=policy,
        sym_alg=sym_alg, sym_bits=sym_bits, sym_mode=sym_mode, scheme=scheme,
    )  # fmt: skip
    if kind == ALG_RSA:
        bits, exponent = r.u16(), r.u32()
        modulus = r.tpm2b(MAX_RSA_BYTES, "unique.rsa")
        r.end()
        if len(modulus) * 8 != bits:
            raise AttestationFailed(f"tpm: RSA modulus is {len(modulus) * 8} bits, keyBits {bits}")
        return TpmPublic(**common, rsa_bits=bits, rsa_exponent=exponent, rsa_modulus=modulus)  # type: ignore[arg-type]
    if kind == ALG_ECC:
        curve = r.u16()
        kdf = _scheme(r, _KDF_SCHEMES)
        x = r.tpm2b(MAX_ECC_COORD, "unique.ecc.x")
        y = r.tpm2b(MAX_ECC_COORD, "unique.ecc.y")
        r.end()
        return TpmPublic(**common, curve=curve, kdf=kdf, ecc_x=x, ecc_y=y)  # type: ignore[arg-type]
    raise AttestationFailed(f"tpm: public area type 0x{kind:04x} is not RSA or ECC")


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC: 2-byte size then exactly that many bytes of TPMT_PUBLIC."""
    r = Reader(data, "TPM2B_PUBLIC")
    inner = r.tpm2b(MAX_PUBLIC, "publicArea")
    r.end()
    return parse_tpmt_public(inner)


@dataclass(frozen=True)
class PcrSelection:
    hash_alg: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Attest:
    """A TPMS_ATTEST of type quote or certify."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: int
    firmware_version: int
    pcr_select: tuple[PcrSelection, ...] = ()
    pcr_digest: bytes = b""
    certified_name: bytes = b""
    certified_qualified_name: bytes = b""


def _pcr_selections(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32()
    if count > MAX_PCR_BANKS:
        raise AttestationFailed(f"tpm: quote selects {count} PCR banks; at most {MAX_PCR_BANKS}")
    out = []
    for _ in range(count):
        alg, size = r.u16(), r.u8()
        if size > MAX_PCR_SELECT:
            raise AttestationFailed(f"tpm: PCR select is {size} bytes; at most {MAX_PCR_SELECT}")
        bitmap = r.take(size)
        indices = tuple(i for i in range(size * 8) if bitmap[i // 8] & (1 << (i % 8)))
        out.append(PcrSelection(alg, indices))
    return tuple(out)


def parse_attest(data: bytes) -> Attest:
    """A TPMS_ATTEST (the signed bytes of a quote or certify)."""
    if len(data) > MAX_ATTEST:
        raise AttestationFailed(f"tpm: TPMS_ATTEST is {len(data)} bytes; at most {MAX_ATTEST}")
    r = Reader(data, "TPMS_ATTEST")
    magic, kind = r.u32(), r.u16()
    signer = r.tpm2b(MAX_NAME, "qualifiedSigner")
    extra = r.tpm2b(MAX_DIGEST, "extraData")
    clock, resets, restarts, safe = r.u64(), r.u32(), r.u32(), r.u8()
    fw = r.u64()
    base = dict(
        magic=magic, type=kind, qualified_signer=signer, extra_data=extra, clock=clock,
        reset_count=resets, restart_count=restarts, safe=safe, firmware_version=fw,
    )  # fmt: skip
    if kind == ST_ATTEST_QUOTE:
        sel = _pcr_selections(r)
        digest = r.tpm2b(MAX_DIGEST, "pcrDigest")
        r.end()
        return Attest(**base, pcr_select=sel, pcr_digest=digest)  # type: ignore[arg-type]
    if kind == ST_ATTEST_CERTIFY:
        name = r.tpm2b(MAX_NAME, "certify.name")
        qname = r.tpm2b(MAX_NAME, "certify.qualifiedName")
        r.end()
        return Attest(**base, certified_name=name, certified_qualified_name=qname)  # type: ignore[arg-type]
    raise AttestationFailed(f"tpm: attestation type 0x{kind:04x} is not quote or certify")


def parse_tpm2b_attest(data: bytes) -> tuple[Attest, bytes]:
    """A TPM2B_ATTEST → (parsed, the inner TPMS_ATTEST bytes that the signature covers)."""
    r = Reader(data, "TPM2B_ATTEST")
    inner = r.tpm2b(MAX_ATTEST, "attestationData")
    r.end()
    return parse_attest(inner), inner


@dataclass(frozen=True)
class Signature:
    alg: int
    hash_alg: int
    rsa_sig: bytes = b""
    ecc_r: bytes = b""
    ecc_s: bytes = b""


def parse_signature(data: bytes) -> Signature:
    """A TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    r = Reader(data, "TPMT_SIGNATURE")
    alg = r.u16()
    if alg in (ALG_RSASSA, ALG_RSAPSS):
        h = r.u16()
        sig = r.tpm2b(MAX_RSA_BYTES, "signature.rsa")
        r.end()
        return Signature(alg, h, rsa_sig=sig)
    if alg == ALG_ECDSA:
        h = r.u16()
        rr = r.tpm2b(MAX_ECC_COORD, "signature.ecdsa.r")
        ss = r.tpm2b(MAX_ECC_COORD, "signature.ecdsa.s")
        r.end()
        return Signature(alg, h, ecc_r=rr, ecc_s=ss)
    raise AttestationFailed(f"tpm: signature algorithm 0x{alg:04x} is not RSASSA, RSAPSS or ECDSA")


def tpm2b(data: bytes) -> bytes:
    """Marshal bytes as a TPM2B (2-byte big-endian size prefix)."""
    if len(data) > 0xFFFF:
        raise ValueError("TPM2B payload longer than 65535 bytes")
    return struct.pack(">H", len(data)) + data
