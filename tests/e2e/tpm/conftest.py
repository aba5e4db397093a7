"""Fixtures for the ``tpm`` end-to-end tests: a swtpm per test (a private copy of a state
manufactured once per session with EK certificates from a test manufacturer CA) and a real
``plastron-server`` trusting that CA."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from swtpm_fixtures import (
    ManufacturerCa,
    SwtpmProcess,
    manufacturer_ca,
    start_copy,
    swtpm_template,
)
from tpm_e2e import TpmAgent, start_tpm_server

from tests.e2e.conftest import PlastronServerProcess

__all__ = ["manufacturer_ca", "swtpm_template"]

pytestmark = pytest.mark.swtpm


@pytest.fixture
def base() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes: keep them short.
    path = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tpm(swtpm_template: Path, base: Path) -> Iterator[SwtpmProcess]:
    proc = start_copy(swtpm_template, base / "tpm")
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def agents() -> Iterator[list[TpmAgent]]:
    started: list[TpmAgent] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.stop()


@pytest.fixture
def server_factory(base: Path) -> Iterator[Callable[..., PlastronServerProcess]]:
    """Start a tpm server with chosen settings (start_tpm_server's keywords); stopped after."""
    started: list[PlastronServerProcess] = []

    def start(ca_path: Path, **kwargs: Any) -> PlastronServerProcess:
        server = start_tpm_server(base, ca_path, **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def tpm_server(
    server_factory: Callable[..., PlastronServerProcess], manufacturer_ca: ManufacturerCa
) -> PlastronServerProcess:
    return server_factory(manufacturer_ca.dir / "ca-cert.pem")
