"""trust_bundle_url: the bootstrap bundle is downloaded over verified HTTPS only."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plastron.agent.plugin_loading import fetch_trust_bundle_url
from plastron.errors import ConfigError, Unavailable


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0] if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return b.sign(issuer[1] if issuer else key, hashes.SHA256())


@pytest.fixture
def https_bundle_server(tmp_path: Path) -> Iterator[tuple[str, Path, bytes]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("bootstrap test CA", ca_key, None, True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("localhost", srv_key, (ca.subject, ca_key), False)
    (tmp_path / "srv.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "srv.key").write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    body = ca.public_bytes(serialization.Encoding.PEM)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}/bundle", tmp_path / "ca.pem", body
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_downloads_over_verified_https(
    https_bundle_server: tuple[str, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file, body = https_bundle_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    assert fetch_trust_bundle_url(url) == body


def test_untrusted_https_server_is_refused(
    https_bundle_server: tuple[str, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = https_bundle_server
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent")
    with pytest.raises(Unavailable, match="download failed"):
        fetch_trust_bundle_url(url, timeout=5)


@pytest.mark.parametrize("url", ["http://localhost/bundle", "file:///etc/passwd", "https:///x"])
def test_only_https_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="https://"):
        fetch_trust_bundle_url(url)
