"""What crosses the TPM boundary, as plain data: EK types, key blobs, quotes.

Pure Python on purpose: the server halves of the attestors use these without importing
tpm2-pytss (the server has no TPM and needs no libtss2 at run time)."""

from __future__ import annotations

from dataclasses import dataclass

# EK types we can use, in the order "auto" tries them (first with a certificate wins).
EK_TYPES: dict[str, str] = {
    "rsa-2048": "EK-RSA2048",
    "ecc-p256": "EK-ECC256",
    "ecc-p384": "EK-HIGH-ECC384",
}


@dataclass(frozen=True)
class EkInfo:
    """The endorsement key: its TPM2B_PUBLIC, its certificate (DER) if the TPM holds one."""

    ek_type: str
    public: bytes
    cert_der: bytes | None


@dataclass(frozen=True, repr=False)
class KeyBlob:
    """A key created under a parent: TPM2B_PRIVATE (wrapped, useless elsewhere) and TPM2B_PUBLIC."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"KeyBlob(public={len(self.public)} bytes, private=<wrapped>)"


@dataclass(frozen=True)
class Quote:
    attest: bytes  # TPM2B_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    pcrs: dict[int, bytes]  # sha256 bank values of the quoted PCRs
