"""The bundle endpoint client over https_web (web PKI roots, host-name check) reading a
captured go-spiffe SPIFFE bundle document, served as Go's net/http would serve it."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plastron.errors import ConfigError, PlastronError, Unavailable
from plastron.records import FederationRelationship
from plastron.server.federation.client import fetch_endpoint_bundle
from plastron.server.federation.config import BundleEndpointConfig, ServingCertFile
from plastron.server.federation.endpoint import BundleEndpointServer
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain

FIXTURE = Path(__file__).parents[2] / "unit" / "federation" / "data"
CAPTURED = (FIXTURE / "go_spiffe_spiffebundle_valid_1.json").read_bytes()
TD = TrustDomain("local")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _web_pki(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA (the 'web root', written to ca.pem) and a localhost server cert it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test web root"))
        .issuer_name(_name("test web root"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"


def _go_style(body: bytes, chunked: bool) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    )
    if not chunked:
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    half = len(body) // 2
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]))
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


@pytest.fixture
async def endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, object]]:
    ca, cert, key = _web_pki(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the client's "system" web roots
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    state: dict[str, object] = {"reply": b""}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(state["reply"])  # type: ignore[arg-type]
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    state["port"] = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def _web_rel(host: str, port: object) -> FederationRelationship:
    return FederationRelationship(TD, f"https://{host}:{port}/", "https_web")


@pytest.mark.parametrize("chunked", [False, True])
async def test_captured_go_spiffe_bundle_is_accepted_over_https_web(
    endpoint: dict[str, object], chunked: bool
) -> None:
    endpoint["reply"] = _go_style(CAPTURED, chunked)
    bundle = await fetch_endpoint_bundle(_web_rel("localhost", endpoint["port"]), None)
    assert bundle.trust_domain == TD
    (authority,) = bundle.x509_certificates()
    assert authority.subject.rfc4514_string() == "O=SPIFFE,C=US"
    assert list(bundle.jwt_keys()) == ["C6vs25welZOx6WksNYfbMfiw9l96pMnD"]
    assert bundle.sequence_number == 0 and bundle.refresh_hint is None


async def test_https_web_checks_the_host_name(endpoint: dict[str, object]) -> None:
    endpoint["reply"] = _go_style(CAPTURED, False)
    # the certificate names localhost, not 127.0.0.1
    with pytest.raises(Unavailable, match="TLS failed"):
        await fetch_endpoint_bundle(_web_rel("127.0.0.1", endpoint["port"]), None)


async def test_https_web_needs_a_web_root(
    endpoint: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoint["reply"] = _go_style(CAPTURED, False)
    (tmp_path / "other").mkdir()
    other_ca, _, _ = _web_pki(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    with pytest.raises(Unavailable, match="TLS failed"):
        await fetch_endpoint_bundle(_web_rel("localhost", endpoint["port"]), None)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "answered HTTP 500"),
        (_go_style(b'{"keys": "nope"}', False), "has no 'keys' array"),
        (_go_style(b'{"keys": []}', False), "has no X.509 authority"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "limit"),
    ],
)
async def test_a_bad_answer_is_refused(
    endpoint: dict[str, object], reply: bytes, message: str
) -> None:
    endpoint["reply"] = reply
    with pytest.raises(PlastronError, match=message):
        await fetch_endpoint_bundle(_web_rel("localhost", endpoint["port"]), None)


def _served_leaf(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_https_web_endpoint_serves_the_file_certificate_and_follows_its_renewal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _web_pki(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    served = Bundle.from_jwks(TD, CAPTURED)
    config = BundleEndpointConfig(
        address="127.0.0.1",
        port=0,
        refresh_hint=dt.timedelta(minutes=2),
        profile="https_web",
        serving_cert_file=ServingCertFile(cert, key, dt.timedelta(milliseconds=200)),
    )
    server = BundleEndpointServer(config, lambda: served, _no_svid)
    await server.start()
    try:
        bundle = await fetch_endpoint_bundle(_web_rel("localhost", server.port), None)
        assert bundle.x509_certificates() == served.x509_certificates()
        assert bundle.refresh_hint == 120
        first = await asyncio.to_thread(_served_leaf, server.port)
        # renew the files (same CA, new key): the endpoint serves the new one without a restart
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        _reissue(tmp_path, renewed)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await asyncio.to_thread(_served_leaf, server.port)) == first:
            assert loop.time() < deadline, "renewed serving certificate not served"
            await asyncio.sleep(0.1)  # polling interval, not a readiness guess
    finally:
        await server.close()


def _no_svid() -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    raise AssertionError("https_web must not use the server SVID")


def _reissue(pki: Path, scratch: Path) -> None:
    """A new cert and key in place of pki/cert.pem and pki/key.pem, under pki/ca.pem's key."""
    _, cert, key = _web_pki(scratch)
    # _web_pki made a new CA too: trust it as well so the renewed cert verifies
    (pki / "ca.pem").write_bytes((pki / "ca.pem").read_bytes() + (scratch / "ca.pem").read_bytes())
    (pki / "key.pem").write_bytes(key.read_bytes())
    (pki / "cert.pem").write_bytes(cert.read_bytes())


async def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    _, cert, key = _web_pki(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = BundleEndpointConfig(
            address="127.0.0.1",
            port=port,
            profile="https_web",
            serving_cert_file=ServingCertFile(cert, key),
        )
        server = BundleEndpointServer(config, lambda: None, _no_svid)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await server.start()
