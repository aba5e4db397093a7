"""``pytest -p plastron.testing`` used as an outside project uses it: a temporary project with
its own test file, which knows nothing of this repository, run by pytest in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
OUTSIDE_TEST = """
import os

from spiffe import SpiffeId, WorkloadApiClient


def test_registered_identity_is_served(plastron_trust_domain, plastron_register):
    spiffe_id = f"spiffe://{plastron_trust_domain}/ci/payments"
    plastron_register(spiffe_id, [f"unix:uid:{os.getuid()}"])
    with WorkloadApiClient() as client:  # SPIFFE_ENDPOINT_SOCKET set by the plugin
        ids = {str(svid.spiffe_id) for svid in client.fetch_x509_svids()}
        jwt = client.fetch_jwt_svid({"payments-api"}, SpiffeId(spiffe_id))
        validated = client.validate_jwt_svid(jwt.token, "payments-api")
    assert spiffe_id in ids
    assert str(validated.spiffe_id) == spiffe_id


def test_entry_of_one_test_is_gone_in_the_next(plastron_workload_socket, plastron_trust_domain):
    with WorkloadApiClient(socket_path=plastron_workload_socket) as client:
        ids = {str(svid.spiffe_id) for svid in client.fetch_x509_svids()}
    assert f"spiffe://{plastron_trust_domain}/dev/uid/{os.getuid()}" in ids
    assert f"spiffe://{plastron_trust_domain}/ci/payments" not in ids


def test_unmatched_selectors_give_this_process_nothing(plastron_trust_domain, plastron_register):
    other = f"spiffe://{plastron_trust_domain}/ci/someone-else"
    plastron_register(other, [f"unix:uid:{os.getuid() + 4242}"])
    with WorkloadApiClient() as client:
        ids = {str(svid.spiffe_id) for svid in client.fetch_x509_svids()}
    assert other not in ids
"""


def test_an_outside_project_gets_real_svids_through_the_plugin(tmp_path: Path) -> None:
    project = tmp_path / "outside-project"
    project.mkdir()
    # Its own rootdir: neither this repository's conftest nor its pytest settings apply.
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_identity.py").write_text(OUTSIDE_TEST)
    run = subprocess.run(
        [*PYTEST, "-p", "plastron.testing", "-q", "--plastron-trust-domain", "outside.test"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout
