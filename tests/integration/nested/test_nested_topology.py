"""Nested servers: an upstream whose CA key is in SoftHSM2, two downstream servers getting
their CAs through the ``spire`` UpstreamAuthority, one agent and one workload under each.

Each workload's X509-SVID verifies against the upstream's X.509 roots alone (the downstream
intermediates travel in the SVID chains), and each workload's JWT-SVID verifies with the
upstream's bundle, which carries every downstream's published JWT key; each workload's own
bundle, served by its downstream, verifies the other's X509-SVID.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from softhsm_token import SoftHsmToken
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient

from plastron.keymanager import PublicKey
from plastron.spiffe.bundle import Bundle
from plastron.spiffe.ids import TrustDomain
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.agent.agent_processes import TD, AgentProcess, ServerProcess
from tests.integration.nested.topology import (
    Upstream,
    downstream_server,
    register_downstream,
    start_upstream,
)
from tests.processes import poll

pytestmark = pytest.mark.softhsm

AUDIENCE = "nested-test"


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pn-", dir="/tmp"))  # short: Unix socket paths
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def upstream_bundle(server: ServerProcess) -> Bundle:
    out = server.cli("bundle", "show", "-format", "spiffe").stdout
    return Bundle.from_jwks(TrustDomain(TD), out.encode())


class Workload:
    def __init__(self, agent: AgentProcess) -> None:
        self.client = WorkloadApiClient(socket_path=f"unix://{agent.socket_path}")

    def x509_chain(self) -> list[x509.Certificate] | None:
        svids = self.client.fetch_x509_context().x509_svids
        return list(svids[0].cert_chain) if svids else None

    def bundle(self) -> list[x509.Certificate]:
        bundles = self.client.fetch_x509_context().x509_bundle_set
        return list(bundles.get_bundle_for_trust_domain(PyTrustDomain(TD)).x509_authorities)

    def jwt(self) -> str:
        return self.client.fetch_jwt_svid(audience={AUDIENCE}).token


def start_branch(
    base: Path, upstream: Upstream, name: str, server_extra: str = ""
) -> tuple[ServerProcess, AgentProcess]:
    register_downstream(upstream, name)
    server = downstream_server(base, upstream, name, server_extra)
    server.start()
    agent = AgentProcess(base / name, server)
    node = f"spiffe://{TD}/{name}/node"
    server.create_entry(node, f"spiffe://{TD}/{name}/workload", agent.uid_selector)
    agent.start(server.join_token(node))
    return server, agent


def test_two_downstreams_cross_verify_under_an_hsm_rooted_upstream(
    base: Path, softhsm_token: SoftHsmToken
) -> None:
    upstream = start_upstream(base, softhsm_token)
    processes: list[ServerProcess | AgentProcess] = []
    try:
        branches = {}
        for name in ("east", "west"):
            server, agent = start_branch(base, upstream, name)
            processes += [agent, server]
            branches[name] = Workload(agent)
        chains = {n: poll(f"{n} workload SVID", w.x509_chain) for n, w in branches.items()}
        roots = [a.certificate for a in upstream_bundle(upstream.server).x509_authorities]
        now = dt.datetime.now(dt.UTC)
        for name, chain in chains.items():
            assert len(chain) >= 2, f"{name}: the downstream intermediate travels in the chain"
            validate_x509_svid(chain, roots, now)  # the upstream's roots alone suffice
            other = "west" if name == "east" else "east"
            validate_x509_svid(chain, branches[other].bundle(), now)

        tokens = {n: w.jwt() for n, w in branches.items()}
        jwt_keys = poll(
            "every downstream JWT key in the upstream bundle",
            lambda: (
                (keys := upstream_jwt_keys(upstream.server))
                and all(_kid(t) in keys for t in tokens.values())
                and keys
            ),
        )
        for name, token in tokens.items():
            svid = validate_jwt_svid(token, audience=AUDIENCE, authorities=jwt_keys, now=now)
            assert str(svid.spiffe_id) == f"spiffe://{TD}/{name}/workload"
        # Each downstream follows the upstream's bundle, so each workload's own Workload API
        # validates the other branch's JWT-SVID (the key the other downstream published).
        for name, w in branches.items():
            other = "west" if name == "east" else "east"
            poll(
                f"{name} validates {other}'s JWT-SVID",
                lambda w=w, other=other: _validates(w, tokens[other]),
            )
        for w in branches.values():
            w.client.close()
    finally:
        for p in processes:
            p.stop()
        upstream.stop()


def _validates(workload: Workload, token: str) -> bool:
    try:
        workload.client.validate_jwt_svid(token, AUDIENCE)
    except Exception:  # py-spiffe raises its own errors for an unknown key; poll again
        return False
    return True


def upstream_jwt_keys(server: ServerProcess) -> dict[str, PublicKey]:
    return {a.key_id: a.public_key for a in upstream_bundle(server).jwt_authorities}


def _kid(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])
