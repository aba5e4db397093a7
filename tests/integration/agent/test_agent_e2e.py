"""Real server and agent processes: attestation, interop, restart, ban, evict, propagation,
server outage. The workload side uses the independent ``spiffe`` client."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll
from cryptography.x509 import verification
from cuttable_relay import CuttableRelay
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spiffe.workloadapi.errors import FetchJwtSvidError

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pae-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(base: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(base)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def agent(base: Path, server: ServerProcess) -> Iterator[AgentProcess]:
    ag = AgentProcess(base, server)
    server.create_entry(NODE, WORKLOAD, ag.uid_selector)
    ag.start(server.join_token(NODE))
    try:
        yield ag
    finally:
        ag.stop()


def _client(agent: AgentProcess) -> WorkloadApiClient:
    return WorkloadApiClient(socket_path=f"unix://{agent.socket_path}", default_timeout=5)


def _ids(agent: AgentProcess) -> set[str]:
    out = agent.cli("api", "fetch", "x509")
    if out.returncode != 0:
        return set()
    return {
        line.split("\t")[-1] for line in out.stdout.splitlines() if line.startswith("SPIFFE ID")
    }


def _verify(svid: object, bundle: object) -> None:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(bundle.x509_authorities)))  # type: ignore[attr-defined]
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    verifier.verify(svid.leaf, svid.cert_chain[1:])  # type: ignore[attr-defined]


def test_workload_gets_verified_svids_and_restart_resumes(
    server: ServerProcess, agent: AgentProcess
) -> None:
    poll("workload SVID", lambda: WORKLOAD in _ids(agent))
    with _client(agent) as client:
        ctx = client.fetch_x509_context()
        jwt = client.fetch_jwt_svid({"db"})
        valid = client.validate_jwt_svid(jwt.token, "db")
    assert str(ctx.default_svid.spiffe_id) == WORKLOAD
    _verify(ctx.default_svid, ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain(TD)))
    assert str(valid.spiffe_id) == WORKLOAD
    agents_before = server.agents()
    assert agent.stop() == 0
    agent.start()  # no join token: resumes with the stored SVID
    assert "resuming with stored agent SVID" in agent.proc.log()  # type: ignore[union-attr]
    poll("workload SVID after restart", lambda: WORKLOAD in _ids(agent))
    assert server.agents() == agents_before  # same node, same serial: no re-attestation


def test_entry_create_update_delete_reach_the_workload(
    server: ServerProcess, agent: AgentProcess
) -> None:
    poll("first SVID", lambda: WORKLOAD in _ids(agent))
    second = f"spiffe://{TD}/second"
    entry_id = server.create_entry(NODE, second, agent.uid_selector)
    poll("new entry reaches the workload", lambda: second in _ids(agent))
    server.cli(
        "entry",
        "update",
        "-entryID",
        entry_id,
        "-parentID",
        NODE,
        "-spiffeID",
        second,
        "-selector",
        "unix:uid:4242",
    )
    poll("updated entry no longer matches", lambda: second not in _ids(agent))
    server.cli("entry", "delete", "-entryID", entry_id)
    first = server.create_entry(NODE, f"spiffe://{TD}/third", agent.uid_selector)
    poll("third entry", lambda: f"spiffe://{TD}/third" in _ids(agent))
    server.cli("entry", "delete", "-entryID", first)
    poll("deleted entry is gone", lambda: f"spiffe://{TD}/third" not in _ids(agent))


def test_banned_agent_deletes_its_svid_and_exits(
    server: ServerProcess, agent: AgentProcess
) -> None:
    poll("first SVID", lambda: WORKLOAD in _ids(agent))
    agent_id = next(
        line.split(":", 1)[1].strip()
        for line in server.agents().splitlines()
        if line.startswith("SPIFFE ID")
    )
    server.cli("agent", "ban", "-spiffeID", agent_id)
    assert agent.proc is not None
    assert agent.proc.wait(timeout=30) == 1
    assert "agent is banned" in agent.proc.log()
    assert not (agent.data_dir / "agent-data.json").exists()


def test_evicted_join_token_agent_cannot_reattest_and_exits(
    server: ServerProcess, agent: AgentProcess
) -> None:
    poll("first SVID", lambda: WORKLOAD in _ids(agent))
    agent_id = next(
        line.split(":", 1)[1].strip()
        for line in server.agents().splitlines()
        if line.startswith("SPIFFE ID")
    )
    server.cli("agent", "evict", "-spiffeID", agent_id)
    assert agent.proc is not None
    assert agent.proc.wait(timeout=30) == 1
    assert "re-attestation failed" in agent.proc.log()
    assert not (agent.data_dir / "agent-data.json").exists()


def test_cache_serves_while_the_server_is_down(server: ServerProcess, agent: AgentProcess) -> None:
    poll("first SVID", lambda: WORKLOAD in _ids(agent))
    server.stop()
    with _client(agent) as client:
        svid = client.fetch_x509_svid()
        # a JWT-SVID needs the server: the workload is told to retry, not an internal error
        with pytest.raises(FetchJwtSvidError, match=r"StatusCode\.UNAVAILABLE"):
            client.fetch_jwt_svid(audience={"outage-test"})
    assert str(svid.spiffe_id) == WORKLOAD
    assert svid.leaf.not_valid_after_utc > dt.datetime.now(dt.UTC)
    assert agent.proc is not None and agent.proc.running()
    server.start()
    newer = f"spiffe://{TD}/after-outage"
    server.create_entry(NODE, newer, agent.uid_selector)
    poll("sync resumes after the outage", lambda: newer in _ids(agent))


def test_connection_lost_mid_call_keeps_the_agent_serving(
    base: Path, server: ServerProcess
) -> None:
    """The server's connection dies while a sync call waits for its answer: the agent logs it,
    keeps serving its cache and syncs again once the server is reachable."""
    relay = CuttableRelay(server.port)
    agent = AgentProcess(base, server, server_port=relay.port)
    server.create_entry(NODE, WORKLOAD, agent.uid_selector)
    try:
        agent.start(server.join_token(NODE))
        poll("first SVID", lambda: WORKLOAD in _ids(agent))
        relay.stall()
        # a full sync interval (1 s) under stall, so a call has surely started (bytes alone
        # could be an h2 WINDOW_UPDATE with no call open) ...
        time.sleep(1.5)
        # ... and one sent its request while stalled. A call already in flight when the stall
        # began sends nothing more until its 30 s deadline, after which the next sync does:
        # on a loaded machine that is the common case, hence the long deadline.
        poll("a sync call under stall", lambda: relay.sent_while_stalled > 0, deadline=45.0)
        relay.cut()
        poll("the agent logs the lost call", lambda: "sync failed" in agent.log_text())
        assert agent.proc is not None and agent.proc.running(), agent.proc.log()
        with _client(agent) as client:
            svid = client.fetch_x509_svid()
        assert str(svid.spiffe_id) == WORKLOAD
        newer = f"spiffe://{TD}/after-cut"
        server.create_entry(NODE, newer, agent.uid_selector)
        poll("sync resumes after the cut", lambda: newer in _ids(agent))
        assert agent.proc.running(), agent.proc.log()
        assert "sync failed; serving from cache" in agent.proc.log()
    finally:
        agent.stop()
        relay.close()
