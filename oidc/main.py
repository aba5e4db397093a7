"""``plastron-oidc-discovery -config FILE``: serve the OIDC discovery document and the JWKS of a
trust domain's JWT authorities (SPIRE's oidc-discovery-provider, same flags and config).

Every failure to start is one ``Error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from plastron.clock import Clock, SystemClock
from plastron.errors import ConfigError, PlastronError
from plastron.health_http import HealthHttpConfig, HealthHttpServer
from plastron.logs import configure_logging, fields
from plastron.oidc.config import OidcConfig, ServingCert, load_oidc_config
from plastron.oidc.http import MAX_HEAD_BYTES, DocumentHandler, HttpConnections
from plastron.oidc.sources import KeySetSource
from plastron.version import package_version

log = logging.getLogger("plastron.oidc")

DEFAULT_CONFIG = "oidc-discovery-provider.conf"
TLS_HANDSHAKE_TIMEOUT_SECONDS = 5.0


class CertificateFiles:
    """``serving_cert_file``: the TLS context, reloaded when either file changes."""

    def __init__(self, config: ServingCert) -> None:
        self._config = config
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._mtimes()
        self._load()

    def _mtimes(self) -> tuple[int, int]:
        try:
            return (
                self._config.cert_file_path.stat().st_mtime_ns,
                self._config.key_file_path.stat().st_mtime_ns,
            )
        except OSError:
            return (0, 0)

    def _load(self) -> None:
        try:
            self.context.load_cert_chain(self._config.cert_file_path, self._config.key_file_path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"serving_cert_file: cannot load {self._config.cert_file_path} and "
                f"{self._config.key_file_path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None

    async def watch(self, stop: asyncio.Event) -> None:
        interval = self._config.file_sync_interval.total_seconds()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            stamp = self._mtimes()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                self._load()  # new handshakes use the new pair; on failure the old one stays
                log.info("serving certificate reloaded")
            except ConfigError as exc:
                log.error("serving certificate not reloaded", extra=fields(error=str(exc)))


class Provider:
    def __init__(self, config: OidcConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.source = KeySetSource(config.source, self.clock)
        self.stop_event = asyncio.Event()
        self.certificates = CertificateFiles(config.serving_cert) if config.serving_cert else None
        self._servers: list[asyncio.Server | HealthHttpServer] = []

    def _connections(self) -> HttpConnections:
        c = self.config
        handler = DocumentHandler(
            domains=c.domains,
            bundle=lambda: self.source.bundle,
            clock=self.clock,
            allow_insecure_scheme=c.allow_insecure_scheme,
            jwt_issuer=c.jwt_issuer,
            jwks_uri=c.jwks_uri,
            path_prefix=c.server_path_prefix,
        )
        return HttpConnections(
            handler, tls=self.certificates is not None, log_requests=c.log_requests
        )

    async def _listen(self) -> str:
        c, on_connect = self.config, self._connections()
        if c.listen_socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(c.listen_socket_path)  # a socket left by a previous run
            server = await asyncio.start_unix_server(
                on_connect, str(c.listen_socket_path), limit=MAX_HEAD_BYTES
            )
            where = f"unix://{c.listen_socket_path}"
        elif c.serving_cert is not None and self.certificates is not None:
            server = await asyncio.start_server(
                on_connect,
                c.serving_cert.host,
                c.serving_cert.port,
                ssl=self.certificates.context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_SECONDS,
                limit=MAX_HEAD_BYTES,
            )
            where = f"https://{c.serving_cert.host}:{server.sockets[0].getsockname()[1]}"
        else:
            assert c.insecure_addr is not None
            host, port = c.insecure_addr
            server = await asyncio.start_server(on_connect, host, port, limit=MAX_HEAD_BYTES)
            where = f"http://{host}:{server.sockets[0].getsockname()[1]}"
        self._servers.append(server)
        return where

    async def _health_status(self) -> dict[str, tuple[bool, str]]:
        last = self.source.last_success
        if last is None:
            return {"keys": (False, f"no key set fetched yet from the {self.source.describe}")}
        if self.clock.now() - last > self.config.health_threshold:
            return {"keys": (False, f"no key set fetched since {last.isoformat()}")}
        return {"keys": (True, f"fetched {last.isoformat()}")}

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.source.run(self.stop_event))]
        if self.certificates is not None:
            tasks.append(asyncio.create_task(self.certificates.watch(self.stop_event)))
        try:
            where = await self._listen()
            if self.config.health_checks is not None:
                hc = self.config.health_checks
                health = HealthHttpServer(
                    HealthHttpConfig("localhost", hc.bind_port, hc.live_path, hc.ready_path),
                    self._health_status,
                )
                await health.start()
                self._servers.append(health)
            log.info(
                "serving OIDC discovery",
                extra=fields(address=where, version=package_version(), source=self.source.describe),
            )
            await self.stop_event.wait()
        finally:
            self.stop_event.set()
            for server in self._servers:
                if isinstance(server, HealthHttpServer):
                    await server.close()
                else:
                    server.close()
                    await server.wait_closed()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _serve(config: OidcConfig) -> None:
    provider = Provider(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, provider.stop_event.set)
    await provider.run()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plastron-oidc-discovery",
        description="Serve the OIDC discovery document and JWKS of a trust domain.",
    )
    parser.add_argument("-config", default=DEFAULT_CONFIG, help="path to the HCL config file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_oidc_config(Path(args.config))
        configure_logging(config.log_level, config.log_format, config.log_path)
        asyncio.run(_serve(config))
    except PlastronError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a listener that cannot bind, a socket path that cannot be made
        print(f"Error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
