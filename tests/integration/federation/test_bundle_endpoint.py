"""The SPIFFE bundle endpoint of a real server process (https_spiffe profile), read by our
bundle endpoint client and by py-spiffe's parsers."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import JwtBundle, X509Bundle
from spiffe import TrustDomain as PyTrustDomain

from plastron.errors import Unavailable
from plastron.records import FederationRelationship
from plastron.server.federation.client import fetch_endpoint_bundle
from plastron.spiffe.ids import SpiffeId, TrustDomain
from tests.integration.federation.harness import FederatingServer
from tests.processes import poll

TD = "alpha.test"


@pytest.fixture(scope="module")
def server() -> Iterator[FederatingServer]:
    base = Path(tempfile.mkdtemp(prefix="pfe-", dir="/tmp"))
    srv = FederatingServer(base, TD)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def _rel(server: FederatingServer, endpoint_id: str) -> FederationRelationship:
    return FederationRelationship(
        TrustDomain(TD), server.endpoint_url, "https_spiffe", SpiffeId.parse(endpoint_id)
    )


def _raw_get(server: FederatingServer, request: bytes) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", server.endpoint_port), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(request)
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_endpoint_serves_the_bundle_authenticated_by_the_server_svid(
    server: FederatingServer,
) -> None:
    held = server.bundle()
    rel = _rel(server, f"spiffe://{TD}/spire/server")
    fetched = asyncio.run(fetch_endpoint_bundle(rel, held.x509_certificates()))
    assert fetched.x509_certificates() == held.x509_certificates()
    assert fetched.jwt_keys().keys() == held.jwt_keys().keys()
    assert fetched.sequence_number == held.sequence_number
    assert fetched.refresh_hint == 60  # the configured refresh_hint


def test_endpoint_response_parses_with_py_spiffe(server: FederatingServer) -> None:
    reply = _raw_get(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-type: application/json" in head.lower()
    doc = json.loads(body)
    assert doc["spiffe_refresh_hint"] == 60 and isinstance(doc["spiffe_sequence"], int)
    td = PyTrustDomain(TD)
    # py-spiffe has no SPIFFE bundle parser; like go-spiffe's spiffebundle.Parse, split by use.
    jwt_keys = [k for k in doc["keys"] if k["use"] == "jwt-svid"]
    jwt_bundle = JwtBundle.parse(td, json.dumps({"keys": jwt_keys}).encode())
    assert set(jwt_bundle.jwt_authorities) == set(server.bundle().jwt_keys())
    ders = [base64.b64decode(k["x5c"][0]) for k in doc["keys"] if k["use"] == "x509-svid"]
    x509_bundle = X509Bundle.parse_raw(td, b"".join(ders))
    assert list(x509_bundle.x509_authorities) == server.bundle().x509_certificates()


def test_wrong_endpoint_spiffe_id_is_refused(server: FederatingServer) -> None:
    rel = _rel(server, f"spiffe://{TD}/not-the-server")
    with pytest.raises(Unavailable, match=r"does not match spiffe://alpha\.test/not-the-server"):
        asyncio.run(fetch_endpoint_bundle(rel, server.bundle().x509_certificates()))


def test_endpoint_not_chaining_to_the_held_bundle_is_refused(
    server: FederatingServer, tmp_path: Path
) -> None:
    other = FederatingServer(tmp_path / "other", "other.test")
    other.start()
    try:
        stranger = other.bundle().x509_certificates()
    finally:
        other.stop()
    rel = _rel(server, f"spiffe://{TD}/spire/server")
    with pytest.raises(Unavailable, match="TLS failed"):
        asyncio.run(fetch_endpoint_bundle(rel, stranger))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n", b"400"),
    ],
)
def test_anything_but_get_slash_is_refused(
    server: FederatingServer, request_bytes: bytes, status: bytes
) -> None:
    reply = _raw_get(server, request_bytes)
    assert reply.split(b" ", 2)[1] == status


def _served_leaf(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_https_spiffe_endpoint_follows_the_server_svid_renewal(tmp_path: Path) -> None:
    # a 10 s SVID is renewed at half its life: the endpoint must serve each new one
    srv = FederatingServer(
        tmp_path / "short", "short.test", settings='default_x509_svid_ttl = "10s"'
    )
    srv.start()
    try:
        first = _served_leaf(srv.endpoint_port)
        renewed = poll(
            "a renewed server SVID on the endpoint",
            lambda: (
                (leaf := _served_leaf(srv.endpoint_port)).serial_number != first.serial_number
                and leaf
            ),
        )
        assert renewed.not_valid_before_utc > first.not_valid_before_utc
        rel = FederationRelationship(
            TrustDomain("short.test"),
            srv.endpoint_url,
            "https_spiffe",
            SpiffeId.parse("spiffe://short.test/spire/server"),
        )
        fetched = asyncio.run(fetch_endpoint_bundle(rel, srv.bundle().x509_certificates()))
        assert fetched.x509_certificates() == srv.bundle().x509_certificates()
    finally:
        srv.stop()
