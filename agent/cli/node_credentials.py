"""``plastron-agent x509pop keygen``: make the node key the x509pop attestor accepts, in a token.

The key is generated inside the PKCS#11 token that ``-uri`` names, with the attributes the
attestor requires (sensitive, never extractable, sign-only; a key made by ``pkcs11-tool
--keypairgen`` can also decrypt and unwrap, and is refused). A CSR for it, signed inside the
token, is written for the node CA: the CA's certificate for it, with ``-uri`` as the agent's
``private_key_uri``, is what the agent attests with.
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
