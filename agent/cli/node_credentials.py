"""Node credentials a user can make: ``plastron-agent x509pop keygen`` and ``tpm devid-keygen``.

``x509pop keygen`` makes the node key the x509pop attestor accepts, in a token.
The key is generated inside the PKCS#11 token that ``-uri`` names, with the attributes the
attestor requires (sensitive, never extractable, sign-only; a key made by ``pkcs11-tool
--keypairgen`` can also decrypt and unwrap, and is refused). A CSR for it, signed inside the
token, is written for the node CA: the CA's certificate for it, with ``-uri`` as the agent's
``private_key_uri``, is what the agent attests with.

``tpm devid-keygen`` makes a DevID key for ``tpm_devid`` in the node's TPM (under the SRK the
attestor loads it with) and a CSR signed by it there, for the operator's DevID CA; it writes the
TPM2B_PRIVATE/TPM2B_PUBLIC blobs that ``devid_priv_path`` / ``devid_pub_path`` name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from plastron.errors import InvalidArgument
from plastron.extras import require_extra
from plastron.files import replace_file
from plastron.keymanager import KeyType, fingerprint


def _subject(text: str) -> x509.Name:
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise InvalidArgument(f"-subject {text!r} is not an RFC 4514 name: {exc}") from None
    if not name.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        raise InvalidArgument(f"-subject {text!r} has no CN (the default agent ID uses it)")
    return name


async def x509pop_keygen(args: argparse.Namespace, out: TextIO) -> int:
    subject = _subject(args.subject)
    key_type = KeyType.parse(args.keyType)
    require_extra("hsm", "x509pop keygen")
    from plastron.hsm.uri_key import generate_uri_key  # noqa: PLC0415  # [hsm] extra

    manager, key_id, public = generate_uri_key(args.uri, key_type, replace=args.replace)
    try:
        key = manager.signer(key_id)
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
    finally:
        manager.close()
    replace_file(Path(args.csr), csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
    out.write(
        f"generated {key_type.value} key {manager.label_for(key_id)!r} "
        f"(SHA-256 {fingerprint(public)}); CSR written to {args.csr}\n"
    )
    return 0


async def tpm_devid_keygen(args: argparse.Namespace, out: TextIO) -> int:
    subject = _subject(args.subject)
    require_extra("tpm", "tpm devid-keygen")
    from plastron.tpm.devid_provisioning import create_devid_with_csr  # noqa: PLC0415  # [tpm]

    for flag, target in (("-priv", args.priv), ("-pub", args.pub)):
        if Path(target).exists() and not args.replace:
            raise InvalidArgument(f"{flag} {target} exists; pass -replace to overwrite it")
    blob, csr, public = create_devid_with_csr(args.tcti, args.keyType, subject)
    replace_file(Path(args.priv), blob.private, mode=0o600)
    replace_file(Path(args.pub), blob.public, mode=0o644)
    replace_file(Path(args.csr), csr.public_bytes(serialization.Encoding.PEM), mode=0o644)
    out.write(
        f"generated {args.keyType} DevID key in the TPM ({args.tcti}, SHA-256 "
        f"{fingerprint(public)}); blobs {args.priv} {args.pub}; CSR {args.csr}\n"
    )
    return 0


def _tpm_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tpm = sub.add_parser("tpm", help="TPM node credentials")
    tpm_sub = tpm.add_subparsers(dest="tpm_command", required=True)
    keygen = tpm_sub.add_parser(
        "devid-keygen", help="generate a DevID key in the TPM and write a CSR for it"
    )
    keygen.add_argument("-tcti", default="device:/dev/tpmrm0", help="TPM to use (TCTI string)")
    keygen.add_argument("-subject", required=True, help="CSR subject, e.g. 'CN=node-1'")
    keygen.add_argument("-csr", required=True, help="file to write the PEM CSR to")
    keygen.add_argument("-priv", required=True, help="file for the TPM2B_PRIVATE blob")
    keygen.add_argument("-pub", required=True, help="file for the TPM2B_PUBLIC blob")
    keygen.add_argument("-keyType", default="ecc-p256", help="ecc-p256 (default) or rsa-2048")
    keygen.add_argument("-replace", action="store_true", help="overwrite existing blob files")
    keygen.set_defaults(run=tpm_devid_keygen)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    x509pop = sub.add_parser("x509pop", help="x509pop node credentials")
    x509pop_sub = x509pop.add_subparsers(dest="x509pop_command", required=True)
    keygen = x509pop_sub.add_parser(
        "keygen", help="generate the node key in a PKCS#11 token and write a CSR for it"
    )
    keygen.add_argument("-uri", required=True, help="pkcs11: URI of the key to generate")
    keygen.add_argument("-subject", required=True, help="CSR subject, e.g. 'CN=node-1'")
    keygen.add_argument("-csr", required=True, help="file to write the PEM CSR to")
    keygen.add_argument(
        "-keyType",
        default=KeyType.EC_P256.value,
        help="ec-p256 (default), ec-p384, rsa-2048 or rsa-4096",
    )
    keygen.add_argument(
        "-replace", action="store_true", help="replace a key the token holds under that label"
    )
    keygen.set_defaults(run=x509pop_keygen)
    _tpm_parsers(sub)
