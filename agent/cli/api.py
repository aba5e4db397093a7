"""``plastron-agent api …`` and ``healthcheck``: Workload API calls as SPIRE's CLI prints them."""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from pathlib import Path
from typing import TextIO

from cryptography import x509
from google.protobuf import json_format
from google.protobuf.message import Message
from grpclib.exceptions import GRPCError

from plastron.agent.cli.workload_client import WorkloadClient, socket_path_from
from plastron.errors import ConfigError
from plastron.files import replace_file
from plastron.proto.workload import workload_pb2 as pb
from plastron.spiffe.x509svid import certificates_to_pem, parse_der_chain


def _when(cert: x509.Certificate) -> tuple[str, str]:
    return (
        cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def print_x509(msg: pb.X509SVIDResponse, elapsed_ms: float, out: TextIO) -> None:
    n = len(msg.svids)
    out.write(f"Received {n} svid{'s' if n != 1 else ''} after {elapsed_ms:.3f}ms\n")
    for svid in msg.svids:
        chain = parse_der_chain(svid.x509_svid)
        start, end = _when(chain[0])
        out.write(f"\nSPIFFE ID:\t\t{svid.spiffe_id}\n")
        if svid.hint:
            out.write(f"Hint:\t\t\t{svid.hint}\n")
        out.write(f"SVID Valid After:\t{start}\nSVID Valid Until:\t{end}\n")
        for i, cert in enumerate(chain[1:], start=1):
            start, end = _when(cert)
            out.write(f"Intermediate #{i} Valid After:\t{start}\n")
            out.write(f"Intermediate #{i} Valid Until:\t{end}\n")
        for i, cert in enumerate(parse_der_chain(svid.bundle, max_certs=1024), start=1):
            start, end = _when(cert)
            out.write(f"CA #{i} Valid After:\t{start}\nCA #{i} Valid Until:\t{end}\n")
    out.write("\n")


def write_x509(msg: pb.X509SVIDResponse, directory: Path, out: TextIO) -> None:
    """svid.N.pem, svid.N.key (0600), bundle.N.pem, federated_bundle.N.M.pem, as SPIRE."""
    for i, svid in enumerate(msg.svids):
        chain = parse_der_chain(svid.x509_svid)
        key_pem = b"".join(
            [
                b"-----BEGIN PRIVATE KEY-----\n",
                *_base64_lines(svid.x509_svid_key),
                b"-----END PRIVATE KEY-----\n",
            ]
        )
        files = [
            (directory / f"svid.{i}.pem", certificates_to_pem(chain), 0o644),
            (directory / f"svid.{i}.key", key_pem, 0o600),
            (
                directory / f"bundle.{i}.pem",
                certificates_to_pem(parse_der_chain(svid.bundle, max_certs=1024)),
                0o644,
            ),
        ]
        for j, der in enumerate(msg.federated_bundles.values()):
            pem = certificates_to_pem(parse_der_chain(der, max_certs=1024))
            files.append((directory / f"federated_bundle.{i}.{j}.pem", pem, 0o644))
        for path, data, mode in files:
            replace_file(path, data, mode)
            out.write(f"Writing {'key' if mode == 0o600 else 'certificate'} #{i} to file {path}.\n")


def _base64_lines(data: bytes) -> list[bytes]:
    text = base64.b64encode(data)
    return [text[i : i + 64] + b"\n" for i in range(0, len(text), 64)]


def proto_json(*messages: Message) -> str:
    """SPIRE's ``-output json``: each message with proto field names and defaults included,
    keys sorted (Go re-encodes through a map), one object, or an array for several."""
    docs = [
        json_format.MessageToDict(
            m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for m in messages
    ]
    return json.dumps(docs[0] if len(docs) == 1 else docs, sort_keys=True, separators=(",", ":"))


def _json_out(args: argparse.Namespace) -> bool:
    return bool(args.output == "json")


async def fetch_x509(args: argparse.Namespace, out: TextIO) -> int:
    if args.write and _json_out(args):
        raise ConfigError("-write is only available with -output pretty (as in SPIRE)")
    started = time.monotonic()
    async with WorkloadClient(socket_path_from(args.socketPath), args.timeout) as client:
        msg = await client.fetch_x509()
    if _json_out(args):
        out.write(proto_json(msg) + "\n")
        return 0
    shown = io.StringIO() if args.silent else out
    print_x509(msg, (time.monotonic() - started) * 1000, shown)
    if args.write:
        write_x509(msg, Path(args.write), shown)
    return 0


async def fetch_jwt(args: argparse.Namespace, out: TextIO) -> int:
    audience = [a for part in args.audience for a in part.split(",") if a]
    async with WorkloadClient(socket_path_from(args.socketPath), args.timeout) as client:
        svids = await client.fetch_jwt(audience, args.spiffeID or "")
        bundles = await client.fetch_jwt_bundles()
    if _json_out(args):
        out.write(proto_json(svids, bundles) + "\n")
        return 0
    if args.silent:
        return 0
    for svid in svids.svids:
        out.write(f"token({svid.spiffe_id}):\n\t{svid.svid}\n")
        if svid.hint:
            out.write(f"hint({svid.spiffe_id}):\n\t{svid.hint}\n")
    for td, jwks in bundles.bundles.items():
        out.write(f"bundle({td}):\n\t{jwks.decode()}\n")
    return 0


async def validate_jwt(args: argparse.Namespace, out: TextIO) -> int:
    async with WorkloadClient(socket_path_from(args.socketPath), args.timeout) as client:
        response = await client.validate_jwt(args.audience, args.svid)
    if _json_out(args):
        out.write(proto_json(response) + "\n")
        return 0
    if args.silent:
        return 0
    claims = json_format.MessageToDict(response.claims)
    out.write(f"SVID is valid.\nSPIFFE ID : {response.spiffe_id}\n")
    out.write(f"Claims    : {json.dumps(claims, sort_keys=True)}\n")
    return 0


async def watch(args: argparse.Namespace, out: TextIO) -> int:
    """Every update as it arrives: SPIRE's block, or one JSON object per line."""
    started = time.monotonic()
    async with WorkloadClient(socket_path_from(args.socketPath), None) as client:
        async for msg in client.watch_x509():
            if _json_out(args):
                out.write(proto_json(msg) + "\n")
            elif not args.silent:
                print_x509(msg, (time.monotonic() - started) * 1000, out)
            out.flush()
            started = time.monotonic()
    return 0


async def healthcheck(args: argparse.Namespace, out: TextIO) -> int:
    socket = socket_path_from(args.socketPath)
    try:
        async with WorkloadClient(socket, args.timeout) as client:
            response = await client.health()
    except (GRPCError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        out.write(f"Agent is unhealthy: unable to determine health ({reason}; socket {socket})\n")
        return 1
    if response.status != 1:  # SERVING
        out.write("Agent is unhealthy: agent is not serving\n")
        return 1
    out.write("Agent is healthy.\n")
    return 0
