"""The provider's HTTP listener on a real socket: bounded request heads, no bodies, a cap on
connections, and a serving certificate re-read when its files change."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import SystemClock
from plastron.oidc.config import ServingCert
from plastron.oidc.http import MAX_CONNECTIONS, DocumentHandler, HttpConnections
from plastron.oidc.main import CertificateFiles
from plastron.spiffe.bundle import Bundle, JwtAuthority
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.oidc import DomainAllowList
from tests.e2e.oidc.test_oidc_discovery import write_serving_cert


def bundle() -> Bundle:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return Bundle(TrustDomain("example.org"), jwt_authorities=(JwtAuthority("k1", key),))


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    keys = bundle()
    handler = DocumentHandler(
        domains=DomainAllowList(["localhost"]),
        bundle=lambda: keys,
        clock=SystemClock(),
        allow_insecure_scheme=True,
        jwt_issuer=None,
        jwks_uri=None,
    )
    on_connect = HttpConnections(handler, tls=False, log_requests=False)
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, limit=8192)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_served_and_refused_requests(listener: int) -> None:
    ok = await exchange(listener, b"GET /keys HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ") and b'"kid": "k1"' in ok
    huge = b"GET /keys HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert (await exchange(listener, huge)).startswith(b"HTTP/1.1 431 ")
    body = b"GET /keys HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
    assert (await exchange(listener, body)).startswith(b"HTTP/1.1 413 ")
    post = b"POST /keys HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert (await exchange(listener, post)).startswith(b"HTTP/1.1 405 ")
    assert (await exchange(listener, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")


async def test_connections_beyond_the_cap_are_closed_unanswered(listener: int) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", listener) for _ in range(MAX_CONNECTIONS)]
    try:
        # Every slot holds a connection that sent nothing: the next one is shed at once.
        async def shed() -> bool:
            try:
                answer = await exchange(listener, b"GET /keys HTTP/1.1\r\nHost: localhost\r\n\r\n")
            except ConnectionResetError:  # closed with our request unread
                return True
            return answer == b""

        assert await asyncio.wait_for(_eventually(shed), 30)
    finally:
        for _, writer in idle:
            writer.close()

    # Slots come back as the server sees the idle connections close.
    async def served() -> bool:
        try:
            answer = await exchange(listener, b"GET /keys HTTP/1.1\r\nHost: localhost\r\n\r\n")
        except ConnectionResetError:
            return False
        return answer.startswith(b"HTTP/1.1 200 ")

    assert await asyncio.wait_for(_eventually(served), 30)


async def _eventually(check: object) -> bool:
    # The server accepts the idle connections asynchronously: retry until all hold a slot.
    while not await check():  # type: ignore[operator]
        await asyncio.sleep(0.05)
    return True


async def test_serving_certificate_reloaded_when_its_files_change(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    cert_path, key_path = write_serving_cert(first_dir)
    files = CertificateFiles(
        ServingCert(cert_path, key_path, dt.timedelta(milliseconds=50), "127.0.0.1", 0)
    )
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=files.context)
    port = int(server.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    watcher = asyncio.create_task(files.watch(stop))

    async def served() -> x509.Certificate:
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der)

    try:
        before = await served()
        new_cert, new_key = write_serving_cert(second_dir)
        cert_path.write_bytes(new_cert.read_bytes())
        key_path.write_bytes(new_key.read_bytes())
        wanted = x509.load_pem_x509_certificate(new_cert.read_bytes())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await served()) != wanted:
            assert loop.time() < deadline, "the new certificate was not served"
            await asyncio.sleep(0.05)
        assert before != wanted
    finally:
        stop.set()
        await watcher
        server.close()
        await server.wait_closed()
