"""Bad input at the server API, through one real ``plastron-server run`` process: every method
of every service it serves, with generated request messages and with bytes that are no
protobuf at all, on the admin socket (as an admin) and on the TLS port without a client
certificate (as an unauthenticated peer); and AttestAgent with generated attestation
parameters (join_token payloads, CSRs, unknown types).

Every call must end OK or with a status other than INTERNAL and UNKNOWN, carrying a message; a
rejected call must leave the datastore exactly as it was (a dump of every table before and
after); at the end the server is healthy and has logged no internal error.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel
from hypothesis import given
from hypothesis import strategies as st

from plastron.proto.grpc.health.v1 import health_pb2
from plastron.proto.spire.api.server.agent.v1 import agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.proto.spire.api.server.debug.v1 import debug_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.transport.tls import client_ssl_context
from tests.conformance.nodeattestor_env import short_tmp
from tests.fuzz.fuzzing import check_status, fuzz_settings, mutated
from tests.fuzz.grpc_driver import RawClient, RawCodec, sqlite_dump
from tests.fuzz.protobuf_strategies import Method, messages, methods_of
from tests.integration.agent.agent_processes import ServerProcess

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (agent_pb2, "Agent"), (bundle_pb2, "Bundle"), (entry_pb2, "Entry"), (svid_pb2, "SVID"),
        (debug_pb2, "Debug"), (health_pb2, "Health"),
    )
]  # fmt: skip
METHODS = methods_of(SERVICES)
ATTEST_AGENT = next(m for m in METHODS if m.name == "AttestAgent")
KEY = ec.generate_private_key(ec.SECP256R1())


def _csr(uri: str | None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    )
    if uri:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass
class FuzzServer:
    process: ServerProcess
    db: Path
    admin: RawClient
    tls: RawClient
    seeds: list[bytes]
    tokens: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[FuzzServer]:
    base = short_tmp("pt-fz-")
    process = ServerProcess(base, server_extra="ratelimit { attestation = false }")
    loop = asyncio.new_event_loop()
    clients: list[RawClient] = []
    try:
        process.start()
        bundle = x509.load_pem_x509_certificates(process.cli("bundle", "show").stdout.encode())
        spki = KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        seeds = [
            _csr("spiffe://example.org/w"), _csr(None), spki,
            bundle[0].public_bytes(serialization.Encoding.DER),
        ]  # fmt: skip
        ssl = client_ssl_context(trust_bundle=bundle)
        clients = [
            RawClient(loop, lambda: Channel(path=process.socket_path, codec=RawCodec())),
            RawClient(loop, lambda: Channel("127.0.0.1", process.port, ssl=ssl, codec=RawCodec())),
        ]
        tokens = [process.join_token() for _ in range(3)]
        yield FuzzServer(process, base / "server-data" / "ds.sqlite3", *clients, seeds, tokens)
    finally:
        for client in clients:
            client.close()
        loop.close()
        process.stop()
        shutil.rmtree(base, ignore_errors=True)


def _request(method: Method, seeds: list[bytes]) -> st.SearchStrategy[object]:
    structured = messages(method.request, seeds)
    raw = st.binary(max_size=200) | mutated([b"\x0a\x03abc\x10\x01", b"\x12\x00"])
    return structured | raw


def _call_and_check(
    server: FuzzServer, client: RawClient, method: Method, body: object, boundary: str
) -> None:
    before = sqlite_dump(server.db)
    out = client.call(method.path, body, streaming=method.streaming)  # type: ignore[arg-type]
    accepted = check_status(boundary, out.status, out.message)
    if not accepted:
        assert sqlite_dump(server.db) == before, f"{boundary}: rejected call changed the datastore"


@fuzz_settings(14)
@given(data=st.data())
def admin_socket_requests(server: FuzzServer, method: Method, data: st.DataObject) -> None:
    body = data.draw(_request(method, server.seeds), label="request")
    _call_and_check(
        server, server.admin, method, body, f"server API {method.service} (admin socket)"
    )


@fuzz_settings(4)
@given(data=st.data())
def unauthenticated_tls_requests(server: FuzzServer, method: Method, data: st.DataObject) -> None:
    body = data.draw(_request(method, server.seeds), label="request")
    _call_and_check(
        server, server.tls, method, body, f"server API {method.service} (TLS, no client cert)"
    )


def _attest_params(server: FuzzServer) -> st.SearchStrategy[agent_pb2.AttestAgentRequest]:
    kinds = st.sampled_from(["join_token", "x509pop", "tpm", "tpm_devid"]) | st.text(max_size=20)
    tokens = st.sampled_from([t.encode() for t in server.tokens])
    payloads = tokens | mutated([t.encode() for t in server.tokens]) | st.binary(max_size=300)
    csrs = st.sampled_from(server.seeds[:2]) | mutated(server.seeds[:2]) | st.binary(max_size=64)
    return st.builds(
        lambda kind, payload, csr: agent_pb2.AttestAgentRequest(
            params=agent_pb2.AttestAgentRequest.Params(
                data={"type": kind, "payload": payload}, params={"csr": csr}
            )
        ),
        kinds,
        payloads,
        csrs,
    )


@fuzz_settings(60)
@given(data=st.data())
def attest_agent_parameters(server: FuzzServer, data: st.DataObject) -> None:
    request = data.draw(_attest_params(server), label="request")
    _call_and_check(server, server.tls, ATTEST_AGENT, request, "AttestAgent params")


@fuzz_settings(60)
@given(data=st.data())
def join_token_payloads(server: FuzzServer, data: st.DataObject) -> None:
    """join_token's payload is the token: live ones (each admitted once), edited ones, and
    random bytes, with a good CSR."""
    tokens = [t.encode() for t in server.tokens]
    payload = data.draw(st.sampled_from(tokens) | mutated(tokens) | st.binary(max_size=300))
    request = agent_pb2.AttestAgentRequest(
        params=agent_pb2.AttestAgentRequest.Params(
            data={"type": "join_token", "payload": payload}, params={"csr": server.seeds[0]}
        )
    )
    _call_and_check(server, server.tls, ATTEST_AGENT, request, "join_token payload (AttestAgent)")


def test_server_api_bad_input(server: FuzzServer) -> None:
    """One test, so that one server takes every input and its health is checked after all
    of them (pytest-xdist may split a module's tests over workers, each with its own server)."""
    for method in METHODS:
        admin_socket_requests(server, method)
    for method in METHODS:
        unauthenticated_tls_requests(server, method)
    attest_agent_parameters(server)
    join_token_payloads(server)
    assert server.process.proc.running(), server.process.proc.log()
    assert server.process.cli("healthcheck", check=False).returncode == 0
    log = server.process.proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]
