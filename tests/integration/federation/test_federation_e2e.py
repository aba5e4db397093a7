"""Two Plastron trust domains federating both ways over https_spiffe, one agent each: a
workload in alpha.test verifies, with py-spiffe, an X509-SVID and a JWT-SVID of a workload in
beta.test, and keeps verifying across a rotation of beta's CA (forced through its
LocalAuthority API). Prints the time from beta's prepared CA to alpha's workload holding it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from spiffe import JwtSvid, WorkloadApiClient
from spiffe import TrustDomain as PyTrustDomain

from tests.integration.agent.agent_processes import AgentProcess
from tests.integration.federation.harness import FederatingServer, federates_with
from tests.processes import free_port, poll

ALPHA, BETA = "alpha.test", "beta.test"
SETTINGS = 'default_x509_svid_ttl = "20s"\n  agent_ttl = "1m"'


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pfd-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _bootstrap(server: FederatingServer, foreign: FederatingServer, base: Path) -> None:
    """``bundle set`` with the foreign domain's bundle: the https_spiffe trust anchor."""
    path = base / f"{foreign.td}.json"
    path.write_text(foreign.cli("bundle", "show", "-format", "spiffe").stdout)
    server.cli(
        "bundle", "set", "-id", f"spiffe://{foreign.td}", "-path", str(path), "-format", "spiffe"
    )


def _verify_x509(
    leaf: x509.Certificate, chain: list[x509.Certificate], roots: list[x509.Certificate]
) -> None:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    verifier.verify(leaf, chain)


def _issuer_key_id(cert: x509.Certificate) -> bytes:
    akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.key_identifier is not None
    return akid.key_identifier


def _skid(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


class Workload:
    def __init__(self, agent: AgentProcess) -> None:
        self.client = WorkloadApiClient(
            socket_path=f"unix://{agent.socket_path}", default_timeout=10
        )

    def federated_roots(self, td: str) -> list[x509.Certificate] | None:
        bundle_set = self.client.fetch_x509_context().x509_bundle_set
        bundle = bundle_set.get_bundle_for_trust_domain(PyTrustDomain(td))
        return None if bundle is None else list(bundle.x509_authorities)


def _start_domain(base: Path, td: str, port: int, peer: str, peer_port: int) -> FederatingServer:
    server = FederatingServer(
        base / td, td, settings=SETTINGS, federation=federates_with(peer, peer_port), port=port
    )
    server.start()
    return server


def test_federated_workloads_verify_each_other_across_a_foreign_ca_rotation(base: Path) -> None:
    port_a, port_b = free_port(), free_port()
    alpha = _start_domain(base, ALPHA, port_a, BETA, port_b)
    beta = _start_domain(base, BETA, port_b, ALPHA, port_a)
    agents: list[AgentProcess] = []
    try:
        _bootstrap(alpha, beta, base)
        _bootstrap(beta, alpha, base)
        for server, peer in ((alpha, beta), (beta, alpha)):
            agent = AgentProcess(base / server.td, server, td=server.td)
            server.cli(
                "entry",
                "create",
                "-parentID",
                f"spiffe://{server.td}/node",
                "-spiffeID",
                f"spiffe://{server.td}/wl",
                "-selector",
                agent.uid_selector,
                "-federatesWith",
                f"spiffe://{peer.td}",
            )
            agent.start(server.join_token(f"spiffe://{server.td}/node"))
            agents.append(agent)
        in_alpha, in_beta = Workload(agents[0]), Workload(agents[1])

        def beta_svid_verifies_in_alpha(require_new_ca: bytes | None = None) -> bool:
            roots = in_alpha.federated_roots(BETA)
            svid = in_beta.client.fetch_x509_svid()
            if roots is None:
                return False
            if require_new_ca is not None and _issuer_key_id(svid.leaf) != require_new_ca:
                return False
            _verify_x509(svid.leaf, svid.cert_chain[1:], roots)
            return True

        def beta_jwt_verifies_in_alpha() -> bool:
            token = in_beta.client.fetch_jwt_svid({"alpha-service"}).token
            bundles = in_alpha.client.fetch_jwt_bundles()
            jwt_bundle = bundles.get_bundle_for_trust_domain(PyTrustDomain(BETA))
            if jwt_bundle is None:
                return False
            svid = JwtSvid.parse_and_validate(token, jwt_bundle, {"alpha-service"})
            return str(svid.spiffe_id) == f"spiffe://{BETA}/wl"

        poll("beta X509-SVID verified in alpha", beta_svid_verifies_in_alpha)
        poll("beta JWT-SVID verified in alpha", beta_jwt_verifies_in_alpha)
        # and the other way round: beta's workload holds alpha's bundle
        poll("alpha bundle in beta", lambda: in_beta.federated_roots(ALPHA))

        # Rotate beta's CA: prepare (published in beta's bundle) then activate.
        old_roots = {_skid(c) for c in in_alpha.federated_roots(BETA) or []}
        prepared_at = time.monotonic()
        beta.cli("localauthority", "x509", "prepare")
        beta.cli("localauthority", "jwt", "prepare")

        def alpha_holds_new_beta_ca() -> bytes | None:
            roots = in_alpha.federated_roots(BETA) or []
            new = [_skid(c) for c in roots if _skid(c) not in old_roots]
            return new[0] if new else None

        new_ca = poll("beta's prepared CA in alpha's workload", alpha_holds_new_beta_ca, 120)
        propagation = time.monotonic() - prepared_at
        print(f"\nforeign CA rotation -> federated workload holds it: {propagation:.1f}s")
        beta.cli("localauthority", "x509", "activate", "-authorityID", new_ca.hex())
        beta.cli("localauthority", "jwt", "activate", "-authorityID", _jwt_prepared(beta))
        poll(
            "beta SVID from the new CA verified in alpha",
            lambda: beta_svid_verifies_in_alpha(require_new_ca=new_ca),
            120,
        )
        poll("beta JWT-SVID from the new key verified in alpha", beta_jwt_verifies_in_alpha)
    finally:
        for agent in agents:
            agent.stop()
        alpha.stop()
        beta.stop()


def _jwt_prepared(server: FederatingServer) -> str:
    out = server.cli("localauthority", "jwt", "show").stdout
    blocks = out.split("Prepared")
    assert len(blocks) > 1, out
    line = next(x for x in blocks[1].splitlines() if "Authority ID" in x)
    return line.split(":", 1)[1].strip()
