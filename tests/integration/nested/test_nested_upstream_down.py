"""A downstream keeps issuing while its upstream is down, and rotates its CA (ca_ttl 60 s)
before that CA expires once the upstream is back.

The upstream server stops right after the downstream got its first CA; the downstream's agent
then attests and its workloads get SVIDs while the downstream's CA rotation fails (logged).
When the upstream returns, the downstream's next rotation tick prepares and activates a CA the
upstream signs, and that CA starts before the first one ends (read from the certificates, not
the clock).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from softhsm_token import SoftHsmToken

from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.agent.agent_processes import TD, AgentProcess
from tests.integration.nested.test_nested_topology import (
    Workload,
    upstream_bundle,
)
from tests.integration.nested.topology import (
    downstream_server,
    register_downstream,
    start_upstream,
)
from tests.processes import poll

pytestmark = pytest.mark.softhsm


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pnd-", dir="/tmp"))  # short: Unix socket paths
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_downstream_issues_while_upstream_is_down_and_rotates_before_expiry(
    base: Path, softhsm_token: SoftHsmToken
) -> None:
    upstream = start_upstream(base, softhsm_token)
    server = agent = None
    try:
        # The upstream stops right after the downstream got its first CA, well before that
        # CA's rotation is due; the downstream's agent and workloads arrive while it is down.
        register_downstream(upstream, "east")
        server = downstream_server(base, upstream, "east", server_extra='ca_ttl = "60s"')
        server.start()
        roots = [a.certificate for a in upstream_bundle(upstream.server).x509_authorities]
        upstream.server.stop()
        agent = AgentProcess(base / "east", server)
        node = f"spiffe://{TD}/east/node"
        for name in ("workload", "while-down"):
            server.create_entry(node, f"spiffe://{TD}/east/{name}", agent.uid_selector)
        agent.start(server.join_token(node))
        workload = Workload(agent)
        poll(
            "SVIDs from the downstream while the upstream is down",
            lambda: len(workload.client.fetch_x509_context().x509_svids) == 2,
        )
        first_chain = poll("east workload SVID", workload.x509_chain)
        first_ca = first_chain[1]
        poll(
            "the downstream's CA rotation failing while the upstream is down",
            lambda: "task=rotate_ca" in server.proc.log(),
        )

        upstream.server.start()
        second_chain = poll(
            "east workload SVID under a rotated downstream CA",
            lambda: (c := workload.x509_chain()) and c[1] != first_ca and c,
        )
        second_ca = second_chain[1]
        assert second_ca.not_valid_before_utc < first_ca.not_valid_after_utc
        validate_x509_svid(second_chain, roots, dt.datetime.now(dt.UTC))
        workload.client.close()
    finally:
        for p in (agent, server):
            if p is not None:
                p.stop()
        upstream.stop()
