"""Output formatting and error mapping of plastron-server verbs."""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from plastron.proto.grpc.health.v1 import health_grpc, health_pb2
from plastron.proto.spire.api.types import agent_pb2, bundle_pb2, entry_pb2
from plastron.server.cli import bundle as bundle_cli
from plastron.server.cli.admin_client import AdminClient, run_with_client
from plastron.server.cli.args import CliError
from plastron.server.cli.main import main
from plastron.server.cli.render import agent_lines, entry_lines, proto_json
from plastron.spiffe.bundle import Bundle, X509Authority
from plastron.spiffe.ids import TrustDomain
from plastron.wire.bundles import bundle_from_proto, bundle_to_proto


def test_entry_block_matches_spire_layout() -> None:
    e = entry_pb2.Entry(
        id="e1",
        spiffe_id={"trust_domain": "example.org", "path": "/web"},
        parent_id={"trust_domain": "example.org", "path": "/host"},
        revision_number=3,
        selectors=[{"type": "unix", "value": "uid:1000"}],
        x509_svid_ttl=60,
        federates_with=["other.org"],
        dns_names=["web.example.org"],
        downstream=True,
        admin=True,
        hint="h",
    )
    assert entry_lines(e) == [
        "Entry ID                : e1",
        "SPIFFE ID               : spiffe://example.org/web",
        "Parent ID               : spiffe://example.org/host",
        "Revision                : 3",
        "Downstream              : true",
        "X509-SVID TTL           : 60",
        "JWT-SVID TTL            : default",
        "Selector                : unix:uid:1000",
        "FederatesWith           : other.org",
        "DNS name                : web.example.org",
        "Admin                   : true",
        "Hint                    : h",
    ]
    assert entry_lines(entry_pb2.Entry())[0] == "Entry ID                : (none)"


def test_agent_block_banned_hides_serial() -> None:
    a = agent_pb2.Agent(
        id={"trust_domain": "td", "path": "/spire/agent/x/1"},
        attestation_type="x",
        x509svid_serial_number="",
        x509svid_expires_at=0,
        banned=True,
    )
    assert agent_lines(a) == [
        "SPIFFE ID         : spiffe://td/spire/agent/x/1",
        "Attestation type  : x",
        "Expiration time   : 1970-01-01 00:00:00 +0000 UTC",
        "Banned            : true",
        "Can re-attest     : false",
    ]


def test_proto_json_uses_proto_names_and_defaults() -> None:
    doc = json.loads(proto_json(entry_pb2.Entry(id="x", x509_svid_ttl=0)))
    assert doc["id"] == "x"
    assert doc["x509_svid_ttl"] == 0  # unpopulated scalars printed, as SPIRE's EmitUnpopulated
    assert "x509SvidTtl" not in doc


def _ca(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_bundle_proto_round_trip_and_formats() -> None:
    cert = _ca("a")
    original = Bundle(TrustDomain("td.test"), (X509Authority(cert),), refresh_hint=60)
    msg = bundle_to_proto(original)
    back = bundle_from_proto(msg)
    assert back.x509_certificates() == [cert]
    assert back.refresh_hint == 60
    assert x509.load_pem_x509_certificates(bundle_cli.format_bundle(msg, "pem").encode()) == [cert]
    jwks = bundle_cli.format_bundle(msg, "spiffe")
    assert json.loads(jwks)["spiffe_refresh_hint"] == 60
    assert jwks.startswith('{\n    "keys"')  # 4-space indent, as SPIRE prints it
    parsed = bundle_cli.parse_bundle(jwks.encode(), "spiffe", TrustDomain("td.test"))
    assert parsed.x509_certificates() == [cert]


def test_bundle_rejects_malformed_inputs() -> None:
    bad = bundle_pb2.Bundle(trust_domain="td.test", x509_authorities=[{"asn1": b"junk"}])
    with pytest.raises(CliError, match=r"malformed bundle .*x509_authorities\[0\]"):
        bundle_cli.format_bundle(bad, "pem")
    with pytest.raises(CliError, match="unable to parse bundle data"):
        bundle_cli.parse_bundle(b"", "pem", TrustDomain("td.test"))
    with pytest.raises(CliError, match="unable to parse to spiffe bundle"):
        bundle_cli.parse_bundle(b'{"keys": [{"use": "x509-svid", "kty": "EC"}]}', "spiffe",
                                TrustDomain("td.test"))  # fmt: skip


class _Health(health_grpc.HealthBase):
    """A stand-in health service to drive the client's error paths."""

    def __init__(self) -> None:
        self.mode = "serving"
        self.release = asyncio.Event()

    async def Check(self, stream: Any) -> None:
        await stream.recv_message()
        if self.mode == "error":
            raise GRPCError(Status.INVALID_ARGUMENT, "bad \t thing   here")
        if self.mode == "hang":
            await self.release.wait()
        status = "SERVING" if self.mode == "serving" else "NOT_SERVING"
        await stream.send_message(health_pb2.HealthCheckResponse(status=status))

    async def List(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    async def Watch(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)


@pytest.fixture
def health_socket() -> Iterator[tuple[str, _Health]]:
    base = Path(tempfile.mkdtemp(prefix="pl-cli-", dir="/tmp"))
    path = str(base / "api.sock")
    loop = asyncio.new_event_loop()
    service = _Health()
    servers: list[Server] = []
    ready = threading.Event()

    async def start() -> None:
        # grpclib binds the server to the loop it is created on: create it on the thread's.
        servers.append(Server([service]))
        await servers[0].start(path=path)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield path, service
    finally:
        loop.call_soon_threadsafe(service.release.set)
        loop.call_soon_threadsafe(servers[0].close)
        asyncio.run_coroutine_threadsafe(servers[0].wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        (base / "api.sock").unlink(missing_ok=True)
        base.rmdir()


def _check(client: AdminClient) -> Any:
    return client.call(client.health.Check, health_pb2.HealthCheckRequest(), context="ctx")


def test_grpc_error_becomes_one_spire_shaped_line(health_socket: tuple[str, _Health]) -> None:
    path, service = health_socket
    service.mode = "error"
    with pytest.raises(CliError) as info:
        run_with_client(path, _check)
    assert str(info.value) == "ctx: rpc error: code = InvalidArgument desc = bad thing here"


def test_deadline_is_reported(health_socket: tuple[str, _Health]) -> None:
    path, service = health_socket
    service.mode = "hang"
    with pytest.raises(CliError, match="code = DeadlineExceeded"):
        run_with_client(path, _check, timeout=0.2)


def test_healthcheck_verb(
    health_socket: tuple[str, _Health], capsys: pytest.CaptureFixture[str]
) -> None:
    path, service = health_socket
    assert main(["healthcheck", "-socketPath", path]) == 0
    assert capsys.readouterr().out == "Server is healthy.\n"
    service.mode = "not_serving"
    assert main(["healthcheck", "-socketPath", path]) == 1
    assert capsys.readouterr().err == 'Server is unhealthy: server returned status "NOT_SERVING"\n'
    service.mode = "error"
    assert main(["healthcheck", "-verbose", "-socketPath", path]) == 1
    captured = capsys.readouterr()
    assert captured.out == "Checking server health...\n"
    assert captured.err.count("\n") == 1 and "InvalidArgument" in captured.err


def test_missing_socket_is_a_connection_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "count", "-socketPath", "/nonexistent/dir/api.sock"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "Error: connection error: No such file or directory "
        "(is the server running? socket /nonexistent/dir/api.sock)\n"
    )
