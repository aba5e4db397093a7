"""``plastron-server federation create|update|delete|list|show|refresh`` (SPIRE's flags,
``-data`` JSON and output)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from plastron.errors import PlastronError
from plastron.proto.spire.api.server.trustdomain.v1 import trustdomain_pb2 as tdv1
from plastron.proto.spire.api.types import federationrelationship_pb2 as fr_pb2
from plastron.server.cli.admin_client import call_one, code_name
from plastron.server.cli.args import (
    CliError,
    flag,
    new_parser,
    output_flag,
    read_input,
    socket_flag,
)
from plastron.server.cli.bundle import parse_bundle
from plastron.server.cli.render import plural, print_json
from plastron.spiffe.ids import SpiffeId, TrustDomain
from plastron.wire.bundles import bundle_to_proto

_PROFILES = ("https_web", "https_spiffe")
_FIELDS = (
    "trustDomain",
    "bundleEndpointURL",
    "bundleEndpointProfile",
    "endpointSpiffeID",
    "trustDomainBundleFormat",
)


def relationship_lines(fr: fr_pb2.FederationRelationship) -> list[str]:
    lines = [
        f"Trust domain              : {fr.trust_domain}",
        f"Bundle endpoint URL       : {fr.bundle_endpoint_url}",
    ]
    profile = fr.WhichOneof("bundle_endpoint_profile")
    if profile == "https_web":
        lines.append("Bundle endpoint profile   : https_web")
    elif profile == "https_spiffe":
        lines.append("Bundle endpoint profile   : https_spiffe")
        lines.append(f"Endpoint SPIFFE ID        : {fr.https_spiffe.endpoint_spiffe_id}")
    return lines


def _relationship(
    td_text: str, url: str, profile: str, endpoint_id: str, *, bundle: bytes | None, fmt: str
) -> fr_pb2.FederationRelationship:
    """One relationship message, checked as SPIRE's CLI checks it."""
    if not td_text:
        raise CliError("trust domain is required")
    if not url:
        raise CliError("bundle endpoint URL is required")
    try:
        td = TrustDomain.parse(td_text)
    except PlastronError as exc:
        raise CliError(f"cannot parse trust domain: {exc}") from None
    msg = fr_pb2.FederationRelationship(trust_domain=td.name, bundle_endpoint_url=url)
    if profile == "https_web":
        msg.https_web.SetInParent()
    elif profile == "https_spiffe":
        if not endpoint_id:
            raise CliError(
                "endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set"
            )
        try:
            msg.https_spiffe.endpoint_spiffe_id = str(SpiffeId.parse(endpoint_id))
        except PlastronError as exc:
            raise CliError(f"cannot parse bundle endpoint SPIFFE ID: {exc}") from None
    else:
        raise CliError(f"unknown bundle endpoint profile type: {profile!r}")
    if bundle is not None:
        if fmt not in ("pem", "spiffe"):
            raise CliError(f"unknown trust domain bundle format: {fmt!r}")
        msg.trust_domain_bundle.CopyFrom(bundle_to_proto(parse_bundle(bundle, fmt, td)))
    return msg


def _from_flags(ns: argparse.Namespace) -> fr_pb2.FederationRelationship:
    bundle = None
    if ns.trustDomainBundlePath:
        bundle = read_input(ns.trustDomainBundlePath, "bundle file")
    return _relationship(
        ns.trustDomain,
        ns.bundleEndpointURL,
        ns.bundleEndpointProfile,
        ns.endpointSpiffeID,
        bundle=bundle,
        fmt=ns.trustDomainBundleFormat,
    )


def _item_value(item: dict[str, Any], name: str) -> Any:
    # Go's encoding/json matches keys case-insensitively: endpointSpiffeID == endpointSPIFFEID
    for key, value in item.items():
        if key.lower() == name.lower():
            return value
    return None


def _from_json_item(item: object, index: int) -> fr_pb2.FederationRelationship:
    if not isinstance(item, dict):
        raise CliError(f"could not parse item {index}: not a JSON object")
    fields = {name: _item_value(item, name) for name in (*_FIELDS, "trustDomainBundle")}
    bundle_value = fields["trustDomainBundle"]
    fmt = str(fields["trustDomainBundleFormat"] or "pem")
    bundle: bytes | None = None
    if isinstance(bundle_value, str) and bundle_value:
        bundle = bundle_value.encode()
    elif isinstance(bundle_value, dict):
        bundle = json.dumps(bundle_value).encode()
    try:
        return _relationship(
            str(fields["trustDomain"] or ""),
            str(fields["bundleEndpointURL"] or ""),
            str(fields["bundleEndpointProfile"] or ""),
            str(fields["endpointSpiffeID"] or ""),
            bundle=bundle,
            fmt=fmt,
        )
    except CliError as exc:
        raise CliError(f"could not parse item {index}: {exc}") from None


def _from_data(path: str) -> list[fr_pb2.FederationRelationship]:
    try:
        doc = json.loads(read_input(path, "federation relationships data"))
    except ValueError as exc:
        raise CliError(f"failed to parse JSON: {exc}") from None
    items = _item_value(doc, "federationRelationships") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise CliError('failed to parse JSON: expected {"federationRelationships": [...]}')
    return [_from_json_item(item, i) for i, item in enumerate(items)]


def _write_parser(verb: str, description: str) -> argparse.ArgumentParser:
    parser = new_parser(f"federation {verb}", description)
    flag(parser, "data", default="", help="JSON file of federation relationships ('-': stdin)")
    flag(parser, "trustDomain", default="", help="trust domain to federate with (example.org)")
    flag(parser, "bundleEndpointURL", default="", help="URL of the SPIFFE bundle endpoint")
    flag(parser, "bundleEndpointProfile", default="", help='"https_web" or "https_spiffe"')
    flag(parser, "endpointSpiffeID", default="", help="SPIFFE ID of the bundle endpoint server")
    flag(parser, "trustDomainBundlePath", default="", help="path to the trust domain bundle")
    flag(parser, "trustDomainBundleFormat", default="pem", help='"pem" or "spiffe"')
    socket_flag(parser)
    output_flag(parser)
    return parser


def _relationships(ns: argparse.Namespace) -> list[fr_pb2.FederationRelationship]:
    if not ns.data:
        return [_from_flags(ns)]
    others = [ns.trustDomain, ns.bundleEndpointURL, ns.bundleEndpointProfile, ns.endpointSpiffeID]
    if any(others) or ns.trustDomainBundlePath:
        raise CliError(
            "cannot use other flags to specify relationship fields when 'data' flag is set"
        )
    return _from_data(ns.data)


def _print_results(
    resp: Any, sent: list[fr_pb2.FederationRelationship], verb: str, output: str
) -> int:
    if output == "json":
        print_json(resp)
    failed = 0
    for result, request in zip(resp.results, sent, strict=False):
        if result.status.code == 0:
            if output == "pretty":
                print()
                print("\n".join(relationship_lines(result.federation_relationship)))
            continue
        failed += 1
        print(file=sys.stderr)
        print(
            f"Failed to {verb} the following federation relationship "
            f"(code: {code_name(result.status.code)}, msg: {json.dumps(result.status.message)}):",
            file=sys.stderr,
        )
        print("\n".join(relationship_lines(request)), file=sys.stderr)
    if failed:
        raise CliError(f"failed to {verb} one or more federation relationships")
    return 0


def _write(argv: list[str], verb: str, description: str, rpc: Any, request: Any) -> int:
    ns = _write_parser(verb, description).parse_args(argv)
    rels = _relationships(ns)
    resp = call_one(
        ns.socketPath, rpc, request(federation_relationships=rels), context="request failed"
    )
    return _print_results(resp, rels, verb, ns.output)


def create(argv: list[str]) -> int:
    return _write(
        argv,
        "create",
        "Creates a dynamic federation relationship",
        lambda c: c.trustdomain.BatchCreateFederationRelationship,
        tdv1.BatchCreateFederationRelationshipRequest,
    )


def update(argv: list[str]) -> int:
    return _write(
        argv,
        "update",
        "Updates a dynamic federation relationship",
        lambda c: c.trustdomain.BatchUpdateFederationRelationship,
        tdv1.BatchUpdateFederationRelationshipRequest,
    )


def _id_parser(verb: str, description: str, name: str = "id") -> argparse.ArgumentParser:
    parser = new_parser(f"federation {verb}", description)
    flag(parser, name, default="", help="trust domain")
    socket_flag(parser)
    output_flag(parser)
    return parser


def delete(argv: list[str]) -> int:
    ns = _id_parser("delete", "Deletes a dynamic federation relationship").parse_args(argv)
    if not ns.id:
        raise CliError("id is required")
    req = tdv1.BatchDeleteFederationRelationshipRequest(trust_domains=[ns.id])
    resp = call_one(
        ns.socketPath,
        lambda c: c.trustdomain.BatchDeleteFederationRelationship,
        req,
        context="failed to delete federation relationship",
    )
    if ns.output == "json":
        print_json(resp)
    if len(resp.results) != 1:
        raise CliError(f"server answered {len(resp.results)} results for one trust domain")
    result = resp.results[0]
    if result.status.code != 0:
        raise CliError(
            f"failed to delete federation relationship {json.dumps(result.trust_domain)}: "
            f"{result.status.message}"
        )
    if ns.output == "pretty":
        print("federation relationship deleted.")
    return 0


def list_relationships(argv: list[str]) -> int:
    ns = _id_parser("list", "Lists all dynamic federation relationships", "unused").parse_args(argv)
    req = tdv1.ListFederationRelationshipsRequest()
    resp = call_one(ns.socketPath, lambda c: c.trustdomain.ListFederationRelationships, req)
    if ns.output == "json":
        print_json(resp)
        return 0
    count = len(resp.federation_relationships)
    print(f"Found {count} {plural(count, 'federation relationship', 'federation relationships')}")
    for fr in resp.federation_relationships:
        print()
        print("\n".join(relationship_lines(fr)))
    return 0


def show(argv: list[str]) -> int:
    ns = _id_parser("show", "Shows a dynamic federation relationship", "trustDomain").parse_args(
        argv
    )
    if not ns.trustDomain:
        raise CliError("a trust domain name is required")
    req = tdv1.GetFederationRelationshipRequest(trust_domain=ns.trustDomain)
    resp = call_one(
        ns.socketPath,
        lambda c: c.trustdomain.GetFederationRelationship,
        req,
        context="error showing federation relationship",
    )
    if ns.output == "json":
        print_json(resp)
        return 0
    print(f"Found a federation relationship with trust domain {ns.trustDomain}:\n")
    print("\n".join(relationship_lines(resp)))
    return 0


def refresh(argv: list[str]) -> int:
    ns = _id_parser("refresh", "Refreshes the bundle from the federated trust domain").parse_args(
        argv
    )
    if not ns.id:
        raise CliError("id is required")
    call_one(
        ns.socketPath,
        lambda c: c.trustdomain.RefreshBundle,
        tdv1.RefreshBundleRequest(trust_domain=ns.id),
        context="failed to refresh bundle",
    )
    if ns.output == "json":
        print('{"code": 0, "message": "OK"}')
    else:
        print("Bundle refreshed")
    return 0


COMMANDS: dict[tuple[str, ...], Callable[[list[str]], int]] = {
    ("federation", "create"): create,
    ("federation", "update"): update,
    ("federation", "delete"): delete,
    ("federation", "list"): list_relationships,
    ("federation", "show"): show,
    ("federation", "refresh"): refresh,
}
