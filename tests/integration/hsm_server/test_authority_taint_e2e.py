"""Taint and revoke a CA authority held in SoftHSM2, with a real server, agent and workload.

The server runs on the pkcs11 KeyManager; the agent syncs every SYNC_INTERVAL. After the
operator rotates (prepare, activate) and taints the old X.509 authority through the CLI, the
agent learns of it from the bundle's tainted flag and re-issues every workload SVID chained to
it in its next sync, and its own SVID too; after revoke the bundle no longer holds it, an SVID
it signed stops verifying, its HSM key is gone, and the agent keeps working with the new one.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from softhsm_token import SoftHsmToken
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient

from plastron.errors import PlastronError
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as la
from plastron.spiffe.taint import chained_to
from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.agent.agent_processes import TD, AgentProcess, ServerProcess
from tests.integration.hsm_server.test_server_hsm import list_private_keys, pkcs11_block
from tests.integration.server.server_harness import running_server
from tests.processes import poll

pytestmark = pytest.mark.softhsm

NODE = f"spiffe://{TD}/node"
WORKLOADS = [f"spiffe://{TD}/workload-{i}" for i in range(3)]
SYNC_INTERVAL = "2s"
DISK_KEY_MANAGER_LINE = re.compile(r'  KeyManager "disk" \{[^\n]*\n')


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pat-", dir="/tmp"))  # short: Unix socket paths
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hsm_server(base: Path, token: SoftHsmToken) -> ServerProcess:
    server = ServerProcess(base)
    config = server.config.read_text()
    assert DISK_KEY_MANAGER_LINE.search(config), config
    server.config.write_text(DISK_KEY_MANAGER_LINE.sub(f"  {pkcs11_block(token)}\n", config))
    return server


def authority_ids(text: str) -> list[str]:
    return re.findall(r"Authority ID: ([0-9a-f]+)", text)


class Workload:
    """What one workload process sees on the Workload API."""

    def __init__(self, agent: AgentProcess) -> None:
        self.client = WorkloadApiClient(
            socket_path=f"unix://{agent.socket_path}", default_timeout=5
        )

    def chains(self) -> dict[str, list[x509.Certificate]]:
        ctx = self.client.fetch_x509_context()
        return {str(s.spiffe_id): list(s.cert_chain) for s in ctx.x509_svids}

    def bundle(self) -> list[x509.Certificate]:
        ctx = self.client.fetch_x509_context()
        return list(
            ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain(TD)).x509_authorities
        )


def agent_serial(server: ServerProcess) -> str:
    out = server.cli("agent", "list").stdout
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Serial number" in ln)


def server_leaf(server: ServerProcess) -> x509.Certificate:
    """The X509-SVID the server presents on its TCP port right now."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we only read the certificate
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def ca_certificate(bundle: list[x509.Certificate], authority_id: str) -> x509.Certificate:
    for cert in bundle:
        skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if skid.digest.hex() == authority_id:
            return cert
    raise AssertionError(f"authority {authority_id} is not in the workload's bundle")


def test_taint_reissues_every_workload_svid_and_revoke_removes_the_authority(
    base: Path, softhsm_token: SoftHsmToken
) -> None:
    server = hsm_server(base, softhsm_token)
    server.start()
    agent = AgentProcess(base, server, sync_interval=SYNC_INTERVAL)
    try:
        for workload_id in WORKLOADS:
            server.create_entry(NODE, workload_id, agent.uid_selector)
        agent.start(server.join_token(NODE))
        workload = Workload(agent)
        before = poll(
            "every workload SVID", lambda: len(workload.chains()) == 3 and workload.chains()
        )
        [first] = authority_ids(server.cli("localauthority", "x509", "show").stdout)
        [second] = authority_ids(server.cli("localauthority", "x509", "prepare").stdout)
        server.cli("localauthority", "x509", "activate", "-authorityID", second)
        old_ca = poll(
            "prepared CA in the workload bundle", lambda: ca_certificate(workload.bundle(), first)
        )
        assert all(chained_to(chain, [old_ca]) for chain in before.values())

        agent_serial_before = agent_serial(server)
        server.cli("localauthority", "x509", "taint", "-authorityID", first)
        tainted_at = time.monotonic()
        after = poll(
            "no workload SVID chained to the tainted authority",
            lambda: (
                (c := workload.chains())
                and len(c) == 3
                and not any(chained_to(chain, [old_ca]) for chain in c.values())
                and c
            ),
        )
        elapsed = time.monotonic() - tainted_at
        print(f"\ntaint propagation: {elapsed:.2f}s (agent sync_interval {SYNC_INTERVAL})")
        new_ca = ca_certificate(workload.bundle(), second)
        assert all(chained_to(chain, [new_ca]) for chain in after.values())
        poll(
            "agent SVID re-issued off the tainted authority",
            lambda: agent_serial(server) != agent_serial_before,
        )
        poll(
            "server SVID re-issued off the tainted authority",
            lambda: chained_to([server_leaf(server)], [new_ca]),
        )

        assert "x509-CA-" in list_private_keys(softhsm_token)
        keys_before = list_private_keys(softhsm_token).count("x509-CA-")
        server.cli("localauthority", "x509", "revoke", "-authorityID", first)
        assert first not in {
            ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
            for ca in x509.load_pem_x509_certificates(server.cli("bundle", "show").stdout.encode())
        }
        assert list_private_keys(softhsm_token).count("x509-CA-") == keys_before - 1
        poll(
            "revoked authority out of the workload bundle", lambda: old_ca not in workload.bundle()
        )
        old_chain = before[WORKLOADS[0]]
        with pytest.raises(PlastronError):
            validate_x509_svid(old_chain, workload.bundle(), old_chain[0].not_valid_before_utc)

        # The agent still talks to the server (both re-issued their SVIDs): a new entry arrives.
        server.create_entry(NODE, f"spiffe://{TD}/after-revoke", agent.uid_selector)
        try:
            poll("a new entry's SVID after revoke", lambda: len(workload.chains()) == 4)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nagent log:\n{agent.log_text()[-3000:]}\n"
                f"server log:\n{server.proc.log()[-3000:]}"
            ) from None
        workload.client.close()
    finally:
        agent.stop()
        server.stop()


async def test_with_an_upstream_only_the_upstream_calls_apply(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    """The pkcs11 UpstreamAuthority signs both local CAs with one root: the state names that
    root's SKID, a local taint is refused, and so is tainting the root that signs the active
    authority (SPIRE's rules)."""
    upstream = pkcs11_block(softhsm_token, "UpstreamAuthority", 'root_key_id = "root"')
    km = pkcs11_block(softhsm_token)
    async with running_server(tmp_path, key_manager=km, extra_plugins=upstream) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        [root] = (await h.bundle()).x509_certificates()
        root_skid = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        first = (await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())).active
        assert first.upstream_authority_subject_key_id == root_skid.digest.hex()
        second = (
            await stub.PrepareX509Authority(la.PrepareX509AuthorityRequest())
        ).prepared_authority
        await stub.ActivateX509Authority(
            la.ActivateX509AuthorityRequest(authority_id=second.authority_id)
        )

        with pytest.raises(GRPCError) as err:
            await stub.TaintX509Authority(
                la.TaintX509AuthorityRequest(authority_id=first.authority_id)
            )
        assert err.value.status == Status.FAILED_PRECONDITION
        assert "upstream authority" in (err.value.message or "")
        with pytest.raises(GRPCError) as err:
            await stub.TaintX509UpstreamAuthority(
                la.TaintX509UpstreamAuthorityRequest(subject_key_id=root_skid.digest.hex().upper())
            )
        assert err.value.status == Status.INVALID_ARGUMENT
        assert "signing the current authority" in (err.value.message or ""), err.value.message
        assert not any(a.tainted for a in (await h.bundle()).x509_authorities)


async def test_a_revoked_authority_stays_gone_after_a_restart(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    """The journal forgets the revoked authority and the token no longer holds its key: a
    restarted server resumes with the new authority and does not put the old one back."""
    km = pkcs11_block(softhsm_token)
    async with running_server(tmp_path, key_manager=km) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        first = (await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())).active
        second = (
            await stub.PrepareX509Authority(la.PrepareX509AuthorityRequest())
        ).prepared_authority
        old_id, new_id = first.authority_id, second.authority_id
        await stub.ActivateX509Authority(la.ActivateX509AuthorityRequest(authority_id=new_id))
        await stub.TaintX509Authority(la.TaintX509AuthorityRequest(authority_id=old_id))
        await stub.RevokeX509Authority(la.RevokeX509AuthorityRequest(authority_id=old_id))
    assert list_private_keys(softhsm_token).count("x509-CA-") == 1
    async with running_server(tmp_path, key_manager=km) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        state = await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())
        assert state.active.authority_id == second.authority_id
        assert not state.HasField("old") and not state.HasField("prepared")
        ids = [a.authority_id for a in (await h.bundle()).x509_authorities]
        assert ids == [second.authority_id]
