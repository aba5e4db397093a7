"""``plastron-server bundle show|list|set|delete|count`` (SPIRE's flags and output)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from cryptography import x509

from plastron.errors import PlastronError
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2 as bundlev1
from plastron.proto.spire.api.types import bundle_pb2
from plastron.server.cli.admin_client import (
    AdminClient,
    call_one,
    code_name,
    one_line,
    run_with_client,
)
from plastron.server.cli.args import (
    CliError,
    flag,
    new_parser,
    output_flag,
    read_input,
    socket_flag,
)
from plastron.server.cli.render import print_count, print_json
from plastron.spiffe.bundle import Bundle, X509Authority
from plastron.spiffe.ids import TrustDomain
from plastron.wire.bundles import bundle_from_proto, bundle_to_proto

_FORMATS = ("pem", "spiffe")
_MODE = bundlev1.BatchDeleteFederatedBundleRequest
_DELETE_MODES = {"restrict": _MODE.RESTRICT, "delete": _MODE.DELETE, "dissociate": _MODE.DISSOCIATE}
_HEADER = (
    "****************************************\n* {}\n****************************************\n"
)


def _bundle_from_server(msg: bundle_pb2.Bundle) -> Bundle:
    """The typed bundle behind an API message; a malformed authority is an error, not skipped."""
    try:
        return bundle_from_proto(msg)
    except PlastronError as exc:
        raise CliError(f"server sent a malformed bundle for {msg.trust_domain!r}: {exc}") from None


def format_bundle(msg: bundle_pb2.Bundle, fmt: str) -> str:
    """PEM: the X.509 authorities; spiffe: the SPIFFE bundle JWKS (4-space indent as SPIRE)."""
    bundle = _bundle_from_server(msg)
    if fmt == "pem":
        return bundle.to_pem().decode("ascii")
    return bundle.to_jwks().decode("utf-8") + "\n"


def parse_bundle(data: bytes, fmt: str, td: TrustDomain) -> Bundle:
    if fmt == "pem":
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise CliError(f"unable to parse bundle data: {exc}") from None
        return Bundle(td, tuple(X509Authority(c) for c in certs))
    try:
        return Bundle.from_jwks(td, data)
    except PlastronError as exc:
        raise CliError(f"unable to parse to spiffe bundle: {exc}") from None


def _common(parser: argparse.ArgumentParser, *, with_format: bool = True) -> None:
    if with_format:
        flag(parser, "format", type=str.lower, choices=_FORMATS, default="pem")
    socket_flag(parser)
    output_flag(parser)


def _trust_domain(text: str) -> TrustDomain:
    if not text:
        raise CliError("id flag is required")
    try:
        return TrustDomain.parse(text)
    except PlastronError as exc:
        raise CliError(f"-id: {exc}") from None


def show(argv: list[str]) -> int:
    parser = new_parser("bundle show", "Prints the server CA bundle")
    _common(parser)
    ns = parser.parse_args(argv)

    resp = call_one(ns.socketPath, lambda c: c.bundle.GetBundle, bundlev1.GetBundleRequest())
    if ns.output == "json":
        print_json(resp)
    else:
        sys.stdout.write(format_bundle(resp, ns.format))
    return 0


def list_bundles(argv: list[str]) -> int:
    parser = new_parser("bundle list", "Lists federated bundles")
    flag(parser, "id", default="", help="trust domain of one federated bundle")
    _common(parser)
    ns = parser.parse_args(argv)
    td = _trust_domain(ns.id) if ns.id else None

    async def body(client: AdminClient) -> Any:
        if td is not None:
            req = bundlev1.GetFederatedBundleRequest(trust_domain=td.name)
            return await client.call(client.bundle.GetFederatedBundle, req)
        bundles: list[bundle_pb2.Bundle] = []
        token = ""
        while True:
            page = await client.call(
                client.bundle.ListFederatedBundles,
                bundlev1.ListFederatedBundlesRequest(page_size=500, page_token=token),
            )
            bundles.extend(page.bundles)
            token = page.next_page_token
            if not token:
                return bundlev1.ListFederatedBundlesResponse(bundles=bundles)

    resp = run_with_client(ns.socketPath, body)
    if ns.output == "json":
        print_json(resp)
    elif td is not None:
        sys.stdout.write(format_bundle(resp, ns.format))
    else:
        blocks = [
            _HEADER.format(b.trust_domain) + format_bundle(b, ns.format) for b in resp.bundles
        ]
        sys.stdout.write("\n".join(blocks))
    return 0


def set_bundle(argv: list[str]) -> int:
    parser = new_parser("bundle set", "Creates or updates a federated bundle")
    flag(parser, "id", default="", help="trust domain (spiffe://td) of the bundle")
    flag(parser, "path", default="", help="bundle file (default: stdin)")
    _common(parser)
    ns = parser.parse_args(argv)
    td = _trust_domain(ns.id)
    bundle = parse_bundle(read_input(ns.path, "bundle data"), ns.format, td)
    req = bundlev1.BatchSetFederatedBundleRequest(bundle=[bundle_to_proto(bundle)])

    return _batch_one(
        ns,
        lambda c: c.bundle.BatchSetFederatedBundle,
        req,
        context="failed to set federated bundle",
        refused="failed to set federated bundle",
        done="bundle set.",
    )


def delete(argv: list[str]) -> int:
    parser = new_parser("bundle delete", "Deletes a federated bundle")
    flag(parser, "id", default="", help="trust domain (spiffe://td) of the bundle")
    flag(parser, "mode", choices=tuple(_DELETE_MODES), default="restrict")
    _common(parser, with_format=False)
    ns = parser.parse_args(argv)
    td = _trust_domain(ns.id)
    req = bundlev1.BatchDeleteFederatedBundleRequest(
        trust_domains=[td.name], mode=_DELETE_MODES[ns.mode]
    )

    return _batch_one(
        ns,
        lambda c: c.bundle.BatchDeleteFederatedBundle,
        req,
        context="failed to delete federated bundle",
        refused=f'failed to delete federated bundle "{td.name}"',
        done="bundle deleted.",
    )


def _batch_one(
    ns: argparse.Namespace,
    rpc: Callable[[AdminClient], Any],
    req: Any,
    *,
    context: str,
    refused: str,
    done: str,
) -> int:
    """Send a batch request for one bundle; print the answer and refuse a failed result."""
    resp = call_one(ns.socketPath, rpc, req, context=context)
    if ns.output == "json":
        print_json(resp)
    _check_single(resp, refused)
    if ns.output == "pretty":
        print(done)
    return 0


def _check_single(resp: Any, what: str) -> None:
    if len(resp.results) != 1:
        raise CliError(f"{what}: server answered {len(resp.results)} results for one bundle")
    status = resp.results[0].status
    if status.code != 0:
        raise CliError(f"{what}: {one_line(status.message)} (code: {code_name(status.code)})")


def count(argv: list[str]) -> int:
    parser = new_parser("bundle count", "Count bundles")
    _common(parser, with_format=False)
    ns = parser.parse_args(argv)

    resp = call_one(ns.socketPath, lambda c: c.bundle.CountBundles, bundlev1.CountBundlesRequest())
    print_count(resp, ns.output, "bundle", "bundles")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("bundle", "show"): show,
    ("bundle", "list"): list_bundles,
    ("bundle", "set"): set_bundle,
    ("bundle", "delete"): delete,
    ("bundle", "count"): count,
}
