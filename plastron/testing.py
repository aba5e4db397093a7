"""A pytest plugin for projects that test against real SPIFFE identities: ``pytest -p
plastron.testing``.

One environment per test session, started with ``plastron-dev up`` in a temporary directory
(server with its CA keys in SoftHSM2, agent attested by swtpm or a join token) and taken down
at the end. Fixtures:

``plastron_trust_domain``     the trust domain (str), ``example.org`` unless
                              ``--plastron-trust-domain`` says otherwise.
``plastron_workload_socket``  the Workload API address (``unix:///…``); the session also sets
                              ``SPIFFE_ENDPOINT_SOCKET`` so clients find it unaided.
``plastron_register``         ``plastron_register(spiffe_id, ["unix:uid:1000", …])`` creates a
                              registration entry under the agent and returns its ID once the
                              agent has it; the entry is deleted, and gone from the agent, when
                              the test ends.
``plastron_bundle_path``      the trust bundle (PEM) as the server had it at start.
``plastron_server_socket``    the server's admin socket, for ``plastron-server`` commands.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plastron.devkit.environment import (
    DevEnvironment,
    delete_entry,
    register,
    wait_for_agent_sync,
)

Register = Callable[[str, list[str]], str]
UP_TIMEOUT_S = 300


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("plastron", "Plastron SPIFFE environment")
    group.addoption("--plastron-trust-domain", default="example.org", help="trust domain")
    group.addoption(
        "--plastron-attestor",
        choices=("tpm", "join_token"),
        default=None,
        help="the agent's node attestation (default: tpm when swtpm is installed)",
    )


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plastron.devkit", *args],
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="session")
def plastron_environment(pytestconfig: pytest.Config) -> Iterator[DevEnvironment]:
    """The session's server and agent (``plastron-dev up`` in a temporary directory)."""
    trust_domain = str(pytestconfig.getoption("plastron_trust_domain"))
    attestor = pytestconfig.getoption("plastron_attestor")
    # mkdtemp in the system temp dir: pytest's tmp paths can exceed unix socket path limits.
    directory = Path(tempfile.mkdtemp(prefix="plastron-"))
    args = ["up", "-dir", str(directory), "-trustDomain", trust_domain]
    if attestor:
        args += ["-attestor", str(attestor)]
    started = _dev(*args)
    try:
        if started.returncode != 0:
            pytest.fail(f"plastron-dev up failed: {started.stderr.strip()}", pytrace=False)
        env = DevEnvironment(directory, trust_domain, str(attestor or "auto"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SPIFFE_ENDPOINT_SOCKET", env.exports()["SPIFFE_ENDPOINT_SOCKET"])
            yield env
    finally:
        _dev("down", "-dir", str(directory))
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def plastron_trust_domain(plastron_environment: DevEnvironment) -> str:
    return plastron_environment.trust_domain


@pytest.fixture(scope="session")
def plastron_workload_socket(plastron_environment: DevEnvironment) -> str:
    return plastron_environment.exports()["SPIFFE_ENDPOINT_SOCKET"]


@pytest.fixture(scope="session")
def plastron_bundle_path(plastron_environment: DevEnvironment) -> Path:
    return plastron_environment.bundle_path


@pytest.fixture(scope="session")
def plastron_server_socket(plastron_environment: DevEnvironment) -> Path:
    return plastron_environment.server_socket


@pytest.fixture
def plastron_register(plastron_environment: DevEnvironment) -> Iterator[Register]:
    """Register entries for this test; they are deleted when it ends."""
    created: list[str] = []

    def register_entry(spiffe_id: str, selectors: list[str]) -> str:
        entry_id = register(plastron_environment, spiffe_id, list(selectors))
        created.append(entry_id)
        wait_for_agent_sync(plastron_environment)
        return entry_id

    yield register_entry
    for entry_id in created:
        delete_entry(plastron_environment, entry_id)
    if created:  # the next test starts with this one's identities gone from the agent
        wait_for_agent_sync(plastron_environment)
