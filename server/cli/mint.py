"""``plastron-server x509 mint`` and ``jwt mint``: SVIDs signed by the server for any ID.

The X509-SVID key is generated here and never leaves this process except into the output
(stdout or ``key.pem`` written 0600), as SPIRE does.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import SystemClock, from_unix, to_unix
from plastron.errors import PlastronError
from plastron.files import replace_file
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2 as bundlev1
from plastron.proto.spire.api.server.svid.v1 import svid_pb2 as svidv1
from plastron.server.cli.admin_client import AdminClient, call_one, run_with_client
from plastron.server.cli.args import (
    CliError,
    duration_flag_seconds,
    flag,
    new_parser,
    output_flag,
    repeated_flag,
    socket_flag,
)
from plastron.server.cli.entry_input import spiffe_id_proto
from plastron.server.cli.render import print_json, print_json_value
from plastron.spiffe.jwtsvid import parse_jwt_svid_insecure

_TTL_SLACK_SECONDS = 5


def _pem_certs(ders: list[bytes], kind: str = "CERTIFICATE") -> str:
    out = []
    for der in ders:
        b64 = base64.b64encode(der).decode("ascii")
        body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        out.append(f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n")
    return "".join(out)


def _write_file(path: Path, data: str, mode: int) -> None:
    """Replace ``path`` with a new file of ours (never writes into an existing file or link)."""
    try:
        replace_file(path, data.encode(), mode)
    except OSError as exc:
        raise CliError(f"unable to write {path}: {exc.strerror or exc}") from None


def _warn_if_capped(expires_at: int, ttl: int, what: str) -> None:
    # A few seconds of slack: the server counts the TTL from its own "now", before the reply.
    if ttl and expires_at - to_unix(SystemClock().now()) < ttl - _TTL_SLACK_SECONDS:
        when = from_unix(expires_at).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(
            f'{what} lifetime was capped shorter than specified ttl; expires "{when}"',
            file=sys.stderr,
        )


def _csr(spiffe_id: str, dns: list[str], key: ec.EllipticCurvePrivateKey) -> bytes:
    try:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(name) for name in dns]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256())
        )
    except ValueError as exc:
        raise CliError(f"unable to generate CSR: {exc}") from None
    return csr.public_bytes(serialization.Encoding.DER)


def x509_mint(argv: list[str]) -> int:
    parser = new_parser("x509 mint", "Mints an X509-SVID")
    flag(parser, "spiffeID", default="", help="SPIFFE ID of the X509-SVID")
    flag(parser, "ttl", default="", help="TTL of the X509-SVID (Go duration, e.g. 1h)")
    repeated_flag(parser, "dns", "DNS name to include in the SVID; repeatable")
    flag(parser, "write", default="", help="directory to write svid.pem, key.pem, bundle.pem")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    if not ns.spiffeID:
        raise CliError("spiffeID must be specified")
    sid = spiffe_id_proto(ns.spiffeID, "spiffeID")
    ttl = duration_flag_seconds(ns.ttl, "ttl")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(f"spiffe://{sid.trust_domain}{sid.path}", ns.dns, key)

    async def body(client: AdminClient) -> tuple[Any, Any]:
        minted = await client.call(
            client.svid.MintX509SVID,
            svidv1.MintX509SVIDRequest(csr=csr, ttl=ttl),
            context="unable to mint SVID",
        )
        ca = await client.call(
            client.bundle.GetBundle, bundlev1.GetBundleRequest(), context="unable to get bundle"
        )
        return minted, ca

    minted, ca = run_with_client(ns.socketPath, body)
    chain = list(minted.svid.cert_chain)
    roots = [a.asn1 for a in ca.x509_authorities]
    if not chain:
        raise CliError("server response missing SVID chain")
    if not roots:
        raise CliError("server response missing X509 Authorities")
    _warn_if_capped(minted.svid.expires_at, ttl, "X509-SVID")
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if ns.write:
        return _write_x509(Path(ns.write), chain, key_der, roots)
    if ns.output == "json":
        b64 = [base64.b64encode(d).decode("ascii") for d in chain]
        print_json_value(
            {
                "x509_svid": b64,
                "private_key": base64.b64encode(key_der).decode("ascii"),
                "root_cas": [base64.b64encode(d).decode("ascii") for d in roots],
            }
        )
        return 0
    print(f"X509-SVID:\n{_pem_certs(chain)}")
    print(f"Private key:\n{_pem_certs([key_der], 'PRIVATE KEY')}")
    print(f"Root CAs:\n{_pem_certs(roots)}")
    return 0


def _write_x509(directory: Path, chain: list[bytes], key_der: bytes, roots: list[bytes]) -> int:
    files = (
        ("svid.pem", _pem_certs(chain), 0o644, "X509-SVID"),
        ("key.pem", _pem_certs([key_der], "PRIVATE KEY"), 0o600, "Private key"),
        ("bundle.pem", _pem_certs(roots), 0o644, "Root CAs"),
    )
    for name, data, mode, label in files:
        path = directory / name
        _write_file(path, data, mode)
        print(f"{label} written to {path}")
    return 0


def jwt_mint(argv: list[str]) -> int:
    parser = new_parser("jwt mint", "Mints a JWT-SVID")
    flag(parser, "spiffeID", default="", help="SPIFFE ID of the JWT-SVID")
    flag(parser, "ttl", default="", help="TTL of the JWT-SVID (Go duration, e.g. 5m)")
    repeated_flag(parser, "audience", "audience claim; repeatable")
    flag(parser, "write", default="", help="file to write the token to")
    socket_flag(parser)
    output_flag(parser)
    ns = parser.parse_args(argv)
    if not ns.spiffeID:
        raise CliError("spiffeID must be specified")
    if not ns.audience:
        raise CliError("at least one audience must be specified")
    sid = spiffe_id_proto(ns.spiffeID, "spiffeID")
    ttl = duration_flag_seconds(ns.ttl, "ttl")
    req = svidv1.MintJWTSVIDRequest(id=sid, audience=ns.audience, ttl=ttl)

    resp = call_one(ns.socketPath, lambda c: c.svid.MintJWTSVID, req, context="unable to mint SVID")
    token = resp.svid.token
    if not token:
        raise CliError("server response missing token")
    try:
        expires = to_unix(parse_jwt_svid_insecure(token).expires_at)
        _warn_if_capped(expires, ttl, "JWT-SVID")
    except PlastronError as exc:
        print(f"Unable to determine JWT-SVID lifetime: {exc}", file=sys.stderr)
    if ns.write:
        _write_file(Path(ns.write), token, 0o600)
        print(f"JWT-SVID written to {ns.write}")
    elif ns.output == "json":
        print_json(resp)
    else:
        print(token)
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("x509", "mint"): x509_mint,
    ("jwt", "mint"): jwt_mint,
}
