"""swtpm instances for tests: a test manufacturer CA, EK certificates it signs, one TPM per test.

Import from a conftest (swtpm-tests/ is on pytest's pythonpath):

    manufacturer_ca   session: an EC P-256 "TPM manufacturer" root made by the test run
    swtpm_template    session: a TPM state manufactured once by ``swtpm_setup --create-ek-cert``
                      (RSA-2048 EK cert at NV 0x01c00002, ECC P-384 EK cert at 0x01c00016)
    swtpm             function: a private copy of the template state served by ``swtpm socket``
                      on a unix socket; killed at teardown

The helpers (``manufacture``, ``write_ek_cert``, ``issue_ek_cert``, ...) live in
swtpm_manufacture.py, which does not need pytest, and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from swtpm_manufacture import (
    ECC_P256_EK_CERT_INDEX,
    ECC_P384_EK_CERT_INDEX,
    RSA_EK_CERT_INDEX,
    START_DEADLINE_S,
    ManufacturerCa,
    SwtpmProcess,
    issue_ek_cert,
    make_manufacturer_ca,
    manufacture,
    start_copy,
    write_ek_cert,
)

__all__ = [
    "ECC_P256_EK_CERT_INDEX",
    "ECC_P384_EK_CERT_INDEX",
    "RSA_EK_CERT_INDEX",
    "START_DEADLINE_S",
    "ManufacturerCa",
    "SwtpmProcess",
    "issue_ek_cert",
    "make_manufacturer_ca",
    "manufacture",
    "manufacturer_ca",
    "start_copy",
    "swtpm",
    "swtpm_template",
    "write_ek_cert",
]


# ---- pytest fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def manufacturer_ca(tmp_path_factory: pytest.TempPathFactory) -> ManufacturerCa:
    return make_manufacturer_ca(tmp_path_factory.mktemp("tpm-manufacturer-ca"))


@pytest.fixture(scope="session")
def swtpm_template(
    tmp_path_factory: pytest.TempPathFactory, manufacturer_ca: ManufacturerCa
) -> Path:
    base = tmp_path_factory.mktemp("swtpm-template")
    return manufacture(base / "state", manufacturer_ca)


@pytest.fixture
def swtpm(swtpm_template: Path, tmp_path: Path) -> Iterator[SwtpmProcess]:
    proc = start_copy(swtpm_template, tmp_path / "swtpm")
    try:
        yield proc
    finally:
        proc.kill()
