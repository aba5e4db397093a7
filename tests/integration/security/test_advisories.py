"""One regression test per class of SPIRE security advisory, against a real server process.

Each test states the vulnerable behaviour it guards against; each was checked to fail with
the guarding check temporarily removed (see the report of issue #12). The TLS-resumption and
JWT-SVID classes are in ``test_advisories_tls.py`` and ``test_advisories_jwt.py``.

- a CSR cannot choose its SANs: the X509-SVID's ID and DNS names come from the entry (or the
  agent's node), never from the CSR (SPIRE 0.7.2: "no longer allows agent to specify X.509
  Subject value"; the Node API CSR SAN advisories);
- an agent ID built from attested data is parsed strictly, never normalised (x509pop
  ``agent_path_template`` over a certificate's CN);
- a join token is single use under concurrent attestation (SPIRE 1.14.6, TOCTOU in the join
  token datastore path), on all three databases;
- list page sizes are bounded (SPIRE 1.9.3, unbounded preallocation for ListEntries and
  ListAgents);
- x509pop refuses oversize RSA keys and long chains before any expensive work (SPIRE 1.14.2,
  disproportionate CPU time in x509pop attestation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.attestors.x509pop.wire import (
    Challenge,
    decode_challenge,
    encode_payload,
    encode_response,
    sign_response,
)
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.spiffe.ids import SpiffeId
from plastron.transport.client import connect

from .server_process import (
    TD,
    Answer,
    ServerProcess,
    entry_message,
    make_csr,
    remove_base,
    short_base,
    sqlite_datastore,
)

_TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_TESTS / "unit" / "attestors"))  # x509pop_pki
sys.path.insert(0, str(_TESTS / "integration" / "datastore"))  # datastore_databases

from datastore_databases import BACKENDS, create_database, drop_database  # noqa: E402
from x509pop_pki import Issued, make_ca, make_leaf, new_key  # noqa: E402

NOW = dt.datetime.now(dt.UTC)  # the server process runs on the system clock
ADMIN = TD.spiffe_id("/ops/admin")
ENTRY_PARENT = TD.spiffe_id("/node/parent")
HOSTILE_URIS = (str(ADMIN), str(TD.spiffe_id("/someone/else")))
HOSTILE_DNS = ("evil.example.net",)
CONCURRENT_ATTESTATIONS = 16
RACE_ROUNDS = 4
VALIDITY = {"not_before": NOW - dt.timedelta(days=1), "not_after": NOW + dt.timedelta(days=30)}


def x509pop_plugin(base: Path) -> str:
    return f"""
  NodeAttestor "x509pop" {{ plugin_data {{
    ca_bundle_path = "{base}/x509pop-ca.pem"
    agent_path_template = "/cn/{{{{ .Subject.CommonName }}}}"
  }} }}"""


@pytest.fixture(scope="module")
def node_ca() -> Issued:
    return make_ca("Advisory Node Root", **VALIDITY)


@pytest.fixture(scope="module")
def server(node_ca: Issued) -> Iterator[ServerProcess]:
    base = short_base("pl-adv-")
    (base / "x509pop-ca.pem").write_bytes(node_ca.pem())
    proc = ServerProcess(
        base,
        extra_server=f'admin_ids = ["{ADMIN}"]',
        plugins=sqlite_datastore(base) + x509pop_plugin(base),
    )
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        remove_base(base)


@pytest.fixture(autouse=True)
async def _close_channels(server: ServerProcess) -> AsyncIterator[None]:
    yield  # the channels close in the test's own event loop
    server.close_channels()


def names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(URI SANs, DNS SANs) of ``cert``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.UniformResourceIdentifier), san.get_values_for_type(
        x509.DNSName
    )


def hostile_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    return make_csr(key, uris=HOSTILE_URIS, dns=HOSTILE_DNS, common_name="evil")


def leaf_of(svid: Any) -> x509.Certificate:
    return x509.load_der_x509_certificate(svid.cert_chain[0])


# ---- a CSR cannot choose its SANs ----------------------------------------------------------


async def test_advisory_csr_cannot_choose_its_sans(server: ServerProcess) -> None:
    """AttestAgent, RenewAgent, BatchNewX509SVID and NewDownstreamX509CA take only the CSR's
    public key: its URI SANs (another SPIFFE ID, extra IDs), DNS names and subject are ignored."""
    agent_key = ec.generate_private_key(ec.SECP256R1())
    agent = await server.attest_agent(key=agent_key, csr=hostile_csr(agent_key))
    assert names(agent.chain[0]) == ([str(agent.spiffe_id)], [])

    agent_channel = await server.tls(agent)
    renewed = await agent_grpc.AgentStub(agent_channel).RenewAgent(
        agent_pb2.RenewAgentRequest(params={"csr": hostile_csr(agent_key)})
    )
    assert names(leaf_of(renewed.svid)) == ([str(agent.spiffe_id)], [])

    [entry_id] = await server.create_entries(
        entry_message("/app/web", agent.spiffe_id, "unix:uid:1000", dns_names=["web.example.org"])
    )
    key = ec.generate_private_key(ec.SECP256R1())
    batch = await svid_grpc.SVIDStub(agent_channel).BatchNewX509SVID(
        svid_pb2.BatchNewX509SVIDRequest(params=[{"entry_id": entry_id, "csr": hostile_csr(key)}])
    )
    [result] = batch.results
    assert result.status.code == 0, result.status.message
    leaf = leaf_of(result.svid)
    assert names(leaf) == ([str(TD.spiffe_id("/app/web"))], ["web.example.org"])
    assert "evil" not in leaf.subject.rfc4514_string()

    await server.create_entries(
        entry_message("/nested/server", ENTRY_PARENT, "unix:uid:0", downstream=True)
    )
    downstream = await server.mint("/nested/server")
    ca = await svid_grpc.SVIDStub(await server.tls(downstream)).NewDownstreamX509CA(
        svid_pb2.NewDownstreamX509CARequest(csr=hostile_csr(key))
    )
    ca_cert = x509.load_der_x509_certificate(ca.ca_cert_chain[0])
    assert names(ca_cert) == ([str(TD.id)], [])

    # The admin path takes the ID from the CSR by design, but one ID only, never two.
    with pytest.raises(GRPCError) as err:
        await svid_grpc.SVIDStub(server.local()).MintX509SVID(
            svid_pb2.MintX509SVIDRequest(csr=hostile_csr(key))
        )
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "exactly one URI SAN, found 2" in (err.value.message or "")


# ---- agent IDs built from attested data are canonical --------------------------------------

HOSTILE_COMMON_NAMES = [
    "..",
    "../../../server",  # normalised, /spire/agent/cn/../../../server would be /spire/server
    ".",
    "a/./b",
    "a//b",
    "node/",
    "a/b",  # a value may not add path segments: "a/b" + "c" would collide with "a" + "b/c"
    "/",
    "%2F",
    "..%2F..%2F..%2Fserver",
    "node 7",
    "node:7",
    "nöde",
]


def proof_of_possession(key: object) -> Answer:
    async def answer(blob: bytes) -> bytes:
        challenge = decode_challenge(blob)
        nonce = Challenge(challenge.kind, challenge.nonce)
        return encode_response(sign_response(key, nonce, os.urandom(32)))  # type: ignore[arg-type]

    return answer


def node_leaf(ca: Issued, common_name: str, slot: int = 40) -> Issued:
    return make_leaf(
        ca,
        cn=common_name,
        key=new_key("ec-p256", slot=slot),
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(days=1),
    )


async def x509pop_attest(server: ServerProcess, node: Issued, chain: list[bytes]) -> SpiffeId:
    key = ec.generate_private_key(ec.SECP256R1())
    outcome = await server.attest(
        "x509pop", encode_payload(chain), key, answer=proof_of_possession(node.key)
    )
    return outcome.identity.spiffe_id


async def test_advisory_agent_id_control_template_is_in_use(
    server: ServerProcess, node_ca: Issued
) -> None:
    """Without this, the refusals below could come from something other than the ID check."""
    node = node_leaf(node_ca, "node-7")
    agent_id = await x509pop_attest(server, node, [node.der])
    assert agent_id == TD.spiffe_id("/spire/agent/cn/node-7")


@pytest.mark.parametrize("common_name", HOSTILE_COMMON_NAMES)
async def test_advisory_agent_id_from_attested_data_is_canonical(
    server: ServerProcess, node_ca: Issued, common_name: str
) -> None:
    node = node_leaf(node_ca, common_name)
    before = await server.agent_ids()
    with pytest.raises(GRPCError) as err:
        await x509pop_attest(server, node, [node.der])
    # Refused by the template (a value must fill exactly one path segment) or by the strict
    # parse of the rendered ID; either way the message names the template.
    assert err.value.status == Status.PERMISSION_DENIED, err.value
    assert "agent_path_template" in (err.value.message or ""), err.value.message
    assert await server.agent_ids() == before
    assert str(TD.spiffe_id("/spire/server")) not in await server.agent_ids()


# ---- a join token is single use under concurrency ------------------------------------------


@asynccontextmanager
async def server_on(backend: str, default: ServerProcess) -> AsyncIterator[ServerProcess]:
    """``default`` for SQLite; a server of its own on a fresh database otherwise."""
    if backend == "sqlite3":
        yield default
        return
    base = short_base("pl-adv-db-")
    config, name = create_database(backend, base)
    datastore = (
        f'DataStore "sql" {{ plugin_data {{ database_type = "{backend}"\n'
        f'  connection_string = "{config.connection_string}" }} }}'
    )
    proc = ServerProcess(base, plugins=datastore)
    try:
        await asyncio.to_thread(proc.start)
        yield proc
    finally:
        proc.close_channels()
        await asyncio.to_thread(proc.stop)
        drop_database(backend, name)
        remove_base(base)


async def race_one_token(proc: ServerProcess) -> None:
    """CONCURRENT_ATTESTATIONS connections, connected first so that their AttestAgent calls
    reach the server together, all presenting one new token: exactly one may win."""
    token = await proc.join_token()
    channels = [await proc.tls() for _ in range(CONCURRENT_ATTESTATIONS)]
    await asyncio.gather(*(connect(channel) for channel in channels))
    outcomes = await asyncio.gather(
        *(proc.attest_agent(token, channel=channel) for channel in channels),
        return_exceptions=True,
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, f"{len(won)} attestations succeeded with one token"
    for error in lost:
        assert isinstance(error, GRPCError), repr(error)
        assert error.status == Status.PERMISSION_DENIED, error
        assert "does not exist or has already been used" in (error.message or "")
    agent_id = str(TD.spiffe_id(f"/spire/agent/join_token/{token}"))
    assert str(won[0].spiffe_id) == agent_id
    assert agent_id in await proc.agent_ids()
    proc.close_channels()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_advisory_join_token_single_use_under_concurrency(
    server: ServerProcess, backend: str
) -> None:
    """SPIRE's bug: the token's DELETE did not report "no row", so concurrent attestations
    that had all read the token each succeeded. Several rounds: a race is not won every time."""
    async with server_on(backend, server) as proc:
        for _ in range(RACE_ROUNDS):
            await race_one_token(proc)


# ---- page sizes are bounded ----------------------------------------------------------------

HUGE_PAGE = 10**9
MAX_PAGE = 10_000


async def test_advisory_page_size_is_bounded(server: ServerProcess) -> None:
    """A page size of 10^9 is refused with the maximum named; the maximum itself is served."""
    channel = server.local()
    calls = [
        (entry_grpc.EntryStub(channel).ListEntries, entry_pb2.ListEntriesRequest),
        (agent_grpc.AgentStub(channel).ListAgents, agent_pb2.ListAgentsRequest),
        (
            bundle_grpc.BundleStub(channel).ListFederatedBundles,
            bundle_pb2.ListFederatedBundlesRequest,
        ),
    ]
    for call, request in calls:
        with pytest.raises(GRPCError) as err:
            await call(request(page_size=HUGE_PAGE))
        assert err.value.status == Status.INVALID_ARGUMENT, (request.__name__, err.value)
        assert f"exceeds the maximum of {MAX_PAGE}" in (err.value.message or "")
        await call(request(page_size=MAX_PAGE))  # the bound itself is a valid page


# ---- x509pop: oversize RSA keys and long chains --------------------------------------------


def oversize_rsa_public_key(bits: int = 16384) -> rsa.RSAPublicKey:
    """An RSA public key of ``bits`` bits. Nobody holds its private key (the modulus is random):
    the server must refuse it from the certificate alone, before any signature work."""
    modulus = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(65537, modulus).public_key()


def certificate_for(public_key: Any, issuer: Issued, *, ca: bool, cn: str) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(issuer.key, hashes.SHA256())
    )


async def refused_before_challenge(server: ServerProcess, chain: list[bytes]) -> GRPCError:
    """Attest with ``chain`` expecting a refusal before any challenge (``answer`` is None, so a
    challenge fails the call), and no node record."""
    before = await server.agent_ids()
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(GRPCError) as err:
        await server.attest("x509pop", encode_payload(chain), key)
    assert await server.agent_ids() == before
    return err.value


async def test_advisory_x509pop_oversize_rsa_key(server: ServerProcess, node_ca: Issued) -> None:
    big = oversize_rsa_public_key()
    leaf = certificate_for(big, node_ca, ca=False, cn="big-node")
    error = await refused_before_challenge(server, [leaf.public_bytes(Encoding.DER)])
    assert error.status == Status.INVALID_ARGUMENT, error
    assert "leaf certificate RSA key is 16384 bits; max_rsa_key_size is 8192" in (
        error.message or ""
    )

    intermediate = certificate_for(big, node_ca, ca=True, cn="big-intermediate")
    node = node_leaf(node_ca, "behind-big-intermediate")
    error = await refused_before_challenge(
        server, [node.der, intermediate.public_bytes(Encoding.DER)]
    )
    assert error.status == Status.INVALID_ARGUMENT, error
    assert "intermediate certificate 0 RSA key is 16384 bits" in (error.message or "")


async def test_advisory_x509pop_long_chain(server: ServerProcess, node_ca: Issued) -> None:
    """50 intermediates, each a real CA under the previous one: refused on the count alone."""
    issuer, intermediates = node_ca, []
    for depth in range(50):
        key = new_key("ec-p256", slot=100 + depth)
        issuer = make_ca(f"Advisory Inter {depth}", parent=issuer, key=key, **VALIDITY)
        intermediates.append(issuer)
    node = node_leaf(issuer, "deep-node")
    chain = [node.der, *(i.der for i in reversed(intermediates))]
    error = await refused_before_challenge(server, chain)
    assert error.status == Status.INVALID_ARGUMENT, error
    assert "too many intermediate certificates (50; max_intermediates is 4)" in (
        error.message or ""
    )
