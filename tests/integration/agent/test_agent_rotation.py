"""Short TTLs: workload and agent SVIDs rotate, and keep verifying across a CA rotation."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_processes import TD, AgentProcess, ServerProcess, poll
from cryptography import x509
from cryptography.x509 import verification
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient

NODE = f"spiffe://{TD}/node"
WORKLOAD = f"spiffe://{TD}/workload"
# notBefore is backdated 10 s, so a 15 s TTL is a 25 s lifetime: rotation every few seconds;
# the CA (1 m) prepares its successor at 30 s and activates it at 50 s.
SHORT = 'ca_ttl = "1m"\n  default_x509_svid_ttl = "15s"\n  agent_ttl = "15s"'


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="par-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _issuer_key_id(cert: x509.Certificate) -> bytes:
    akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.key_identifier is not None
    return akid.key_identifier


def _agent_serial(server: ServerProcess) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in server.agents().splitlines()
        if line.startswith("Serial number")
    )


def test_svids_rotate_across_a_ca_rotation(base: Path) -> None:
    server = ServerProcess(base, SHORT)
    server.start()
    agent = AgentProcess(base, server)
    try:
        server.create_entry(NODE, WORKLOAD, agent.uid_selector)
        agent.start(server.join_token(NODE))
        client = WorkloadApiClient(socket_path=f"unix://{agent.socket_path}", default_timeout=5)
        seen_serials: set[int] = set()

        def fetch_verified() -> x509.Certificate:
            ctx = client.fetch_x509_context()
            svid = ctx.default_svid
            bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain(TD))
            # Every state the workload gets must verify against the bundle sent with it.
            verifier = (
                verification.PolicyBuilder()
                .store(verification.Store(list(bundle.x509_authorities)))
                .extension_policies(
                    ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                    ee_policy=verification.ExtensionPolicy.permit_all(),
                )
                .build_client_verifier()
            )
            verifier.verify(svid.leaf, svid.cert_chain[1:])
            seen_serials.add(svid.leaf.serial_number)
            return svid.leaf

        first = poll("first SVID", fetch_verified)
        first_ca = _issuer_key_id(first)
        first_agent_serial = _agent_serial(server)
        poll(
            "workload SVID from the next CA",
            lambda: _issuer_key_id(fetch_verified()) != first_ca,
            deadline=120,
        )
        assert len(seen_serials) >= 3  # rotated at half-life several times on the way
        assert _agent_serial(server) != first_agent_serial  # agent SVID renewed too
        assert agent.proc is not None and agent.proc.running()
        client.close()
    finally:
        agent.stop()
        server.stop()
