"""The SPIFFE bundle endpoint server (SPIFFE Federation spec; SPIRE's ``bundle_endpoint``).

``GET /`` answers the trust domain's bundle as a SPIFFE bundle JWK Set with
``spiffe_sequence`` and the configured ``spiffe_refresh_hint``. TLS per profile:

- ``https_spiffe``: the server's own X509-SVID (``spiffe://<td>/spire/server``), followed across
  its renewals: each handshake uses the SVID current at that moment;
- ``https_web``: a certificate and key from files, re-read every ``file_sync_interval`` so a
  renewed certificate is served without a restart (a bad file keeps the last good one).

No client certificate is asked for: a bundle is public, and its authenticity comes from the
server's certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from plastron.errors import ConfigError
from plastron.keymanager import PrivateKey
from plastron.server.federation.config import HTTPS_SPIFFE, BundleEndpointConfig, ServingCertFile
from plastron.server.federation.http11 import OneShotHttpServer, Reply, reader_limit
from plastron.spiffe.bundle import Bundle
from plastron.transport.tls import https_server_context, https_server_context_from_files

log = logging.getLogger(__name__)

BundleSource = Callable[[], Bundle | None]
SvidSource = Callable[[], tuple[Sequence[x509.Certificate], PrivateKey]]


def load_serving_cert(files: ServingCertFile) -> ssl.SSLContext:
    """The https_web serving context from the certificate chain and key files."""
    return https_server_context_from_files(
        files.cert_file_path, files.key_file_path, "federation.bundle_endpoint.serving_cert_file"
    )


class _SwappingContext:
    """A listening context whose handshakes move onto whatever context is current."""

    def __init__(self, first: ssl.SSLContext, current: Callable[[], ssl.SSLContext]) -> None:
        self._current = current
        self.outer = first
        first.sni_callback = self._on_client_hello

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: object
    ) -> int | None:
        try:
            ctx = self._current()
        except Exception as exc:  # keep serving the last good context
            log.warning(
                "bundle endpoint: cannot refresh the TLS context, keeping the last: %s", exc
            )
            return None
        if ssl_object.context is not ctx:
            ssl_object.context = ctx
        return None


class BundleEndpointServer:
    def __init__(
        self,
        config: BundleEndpointConfig,
        bundle: BundleSource,
        svid: SvidSource,
        base_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._bundle = bundle
        self._svid = svid
        self._serving = _resolved(config.serving_cert_file, base_dir)
        self._server: asyncio.Server | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._web_context: ssl.SSLContext | None = None
        self._spiffe_context: tuple[tuple[bytes, ...], ssl.SSLContext] | None = None
        self._http = OneShotHttpServer(self._respond)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        first = self._current_context()
        swapping = _SwappingContext(self._fresh_copy(first), self._current_context)
        try:
            self._server = await asyncio.start_server(
                self._http.handle,
                self._config.address,
                self._config.port,
                ssl=swapping.outer,
                limit=reader_limit(),
                ssl_handshake_timeout=10.0,
            )
        except OSError as exc:
            where = f"{self._config.address}:{self._config.port}"
            raise ConfigError(
                f"federation.bundle_endpoint: cannot listen on {where}: {exc.strerror or exc}"
            ) from None
        if self._serving is not None:
            self._sync_task = asyncio.create_task(self._sync_files(self._serving))
        log.info(
            "bundle endpoint serving profile=%s address=%s port=%d",
            self._config.profile,
            self._config.address,
            self.port,
        )

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _fresh_copy(self, ctx: ssl.SSLContext) -> ssl.SSLContext:
        # The listening context gets the sni_callback; a separate one keeps the current
        # context free of it (a callback that swaps to itself would loop needlessly).
        if self._config.profile == HTTPS_SPIFFE:
            chain, key = self._svid()
            return https_server_context(chain, key)
        assert self._serving is not None
        return load_serving_cert(self._serving)

    def _current_context(self) -> ssl.SSLContext:
        if self._config.profile != HTTPS_SPIFFE:
            if self._web_context is None:
                assert self._serving is not None
                self._web_context = load_serving_cert(self._serving)
            return self._web_context
        chain, key = self._svid()
        fingerprint = tuple(c.fingerprint(hashes.SHA256()) for c in chain)
        if self._spiffe_context is None or self._spiffe_context[0] != fingerprint:
            self._spiffe_context = (fingerprint, https_server_context(chain, key))
        return self._spiffe_context[1]

    async def _sync_files(self, files: ServingCertFile) -> None:
        while True:
            await asyncio.sleep(files.file_sync_interval.total_seconds())
            try:
                self._web_context = load_serving_cert(files)
            except ConfigError as exc:
                log.warning("bundle endpoint: keeping the last serving certificate: %s", exc)

    def _respond(self, method: str, path: str) -> Reply:
        if path != "/":
            return Reply(404, b"not found\n", "text/plain; charset=utf-8")
        if method != "GET":
            return Reply(405, b"method not allowed\n", "text/plain; charset=utf-8")
        bundle = self._bundle()
        if bundle is None:
            return Reply(503, b"bundle not available yet\n", "text/plain; charset=utf-8")
        hint = int(self._config.refresh_hint.total_seconds())
        return Reply(200, replace(bundle, refresh_hint=hint).to_jwks())


def _resolved(files: ServingCertFile | None, base_dir: Path | None) -> ServingCertFile | None:
    if files is None or base_dir is None:
        return files
    return replace(
        files,
        cert_file_path=base_dir / files.cert_file_path,
        key_file_path=base_dir / files.key_file_path,
    )


def check_bundle_endpoint(config: BundleEndpointConfig | None, base_dir: Path | None) -> None:
    """``validate`` and ``run``: an https_web serving certificate must load (ConfigError
    naming the files otherwise), before anything is opened."""
    if config is None:
        return
    serving = _resolved(config.serving_cert_file, base_dir)
    if serving is not None:
        load_serving_cert(serving)
