"""Authority events flow down: a taint and a revoke at the HSM-rooted upstream reach a
downstream server, its agent and its workload.

The upstream rotates its root and taints the old one. The downstream, following the
upstream's bundle, sees the taint, replaces its CA (which chains to the tainted root) with one
the new root signs, and passes the tainted flag to its agent, which re-issues the workload's
SVID. After the upstream revokes the old root, it leaves the workload's bundle too.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from softhsm_token import SoftHsmToken

from plastron.spiffe.bundle import x509_authority_id
from plastron.spiffe.taint import chained_to
from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.nested.test_nested_topology import (
    Workload,
    start_branch,
    upstream_bundle,
)
from tests.integration.nested.topology import start_upstream
from tests.processes import poll

pytestmark = pytest.mark.softhsm


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pnt-", dir="/tmp"))  # short: Unix socket paths
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def authority_ids(text: str) -> list[str]:
    return re.findall(r"Authority ID: ([0-9a-f]+)", text)


def root(server_bundle: list[x509.Certificate], authority_id: str) -> x509.Certificate:
    return next(c for c in server_bundle if x509_authority_id(c) == authority_id)


def test_upstream_taint_and_revoke_reach_the_downstream_workload(
    base: Path, softhsm_token: SoftHsmToken
) -> None:
    upstream = start_upstream(base, softhsm_token)
    server = agent = None
    try:
        server, agent = start_branch(base, upstream, "east")
        workload = Workload(agent)
        before = poll("east workload SVID", workload.x509_chain)
        up = upstream.server
        [first] = authority_ids(up.cli("localauthority", "x509", "show").stdout)
        [second] = authority_ids(up.cli("localauthority", "x509", "prepare").stdout)
        up.cli("localauthority", "x509", "activate", "-authorityID", second)
        roots = [a.certificate for a in upstream_bundle(up).x509_authorities]
        old_root, new_root = root(roots, first), root(roots, second)
        assert chained_to(before, [old_root])
        poll("the new upstream root in the workload bundle", lambda: new_root in workload.bundle())

        up.cli("localauthority", "x509", "taint", "-authorityID", first)
        tainted_at = time.monotonic()
        after = poll(
            "east workload SVID off the tainted upstream root",
            lambda: (c := workload.x509_chain()) and not chained_to(c, [old_root]) and c,
        )
        elapsed = time.monotonic() - tainted_at
        print(f"\nupstream taint to downstream workload re-issue: {elapsed:.2f}s")
        validate_x509_svid(after, [new_root], dt.datetime.now(dt.UTC))

        up.cli("localauthority", "x509", "revoke", "-authorityID", first)
        poll("revoked root out of the workload bundle", lambda: old_root not in workload.bundle())
        assert new_root in workload.bundle()
        workload.client.close()
    finally:
        for p in (agent, server):
            if p is not None:
                p.stop()
        upstream.stop()
