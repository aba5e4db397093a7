"""The server API end to end over real sockets: admin socket (local) and TCP + mTLS (agent)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.attestors.base import AttestationResult
from plastron.errors import AttestationFailed
from plastron.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from plastron.proto.spire.api.server.bundle.v1 import bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.proto.spire.api.types import status_pb2
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.jwtsvid import validate_jwt_svid
from plastron.spiffe.x509svid import validate_x509_svid
from plastron.wire.limits import MAX_DNS_NAMES, MAX_TTL_SECONDS

from .server_harness import TD, Harness, attest_params, make_csr, running_server


@pytest.fixture
async def harness(tmp_path: Path):
    async with running_server(tmp_path) as h:
        yield h


def entry(spiffe: str, parent: str, *selectors: str, **kw: object) -> types_entry.Entry:
    e = types_entry.Entry(
        spiffe_id={"trust_domain": "example.org", "path": spiffe},
        parent_id={"trust_domain": "example.org", "path": parent},
        **kw,  # type: ignore[arg-type]
    )
    for s in selectors:
        t, v = s.split(":", 1)
        e.selectors.add(type=t, value=v)
    return e


async def create(
    h: Harness, *entries: types_entry.Entry
) -> list[entry_pb2.BatchCreateEntryResponse.Result]:
    stub = h.entry_stub(h.local())
    resp = await stub.BatchCreateEntry(entry_pb2.BatchCreateEntryRequest(entries=list(entries)))
    return list(resp.results)


async def count_entries(h: Harness) -> int:
    resp = await h.entry_stub(h.local()).CountEntries(entry_pb2.CountEntriesRequest())
    return int(resp.count)


async def test_entry_crud_and_filters(harness: Harness) -> None:
    results = await create(
        harness,
        entry("/web", "/node", "unix:uid:1000"),
        entry("/db", "/node", "unix:uid:1001", "unix:gid:5"),
    )
    assert [r.status.code for r in results] == [0, 0]
    ids = [r.entry.id for r in results]
    stub = harness.entry_stub(harness.local())
    got = await stub.GetEntry(entry_pb2.GetEntryRequest(id=ids[0]))
    assert got.spiffe_id.path == "/web"
    listed = await stub.ListEntries(
        entry_pb2.ListEntriesRequest(
            filter=entry_pb2.ListEntriesRequest.Filter(
                by_selectors={"selectors": [{"type": "unix", "value": "uid:1001"}], "match": 3}
            )
        )
    )
    assert [e.spiffe_id.path for e in listed.entries] == ["/db"]
    # the same entry again: ALREADY_EXISTS with the existing entry
    dup = await create(harness, entry("/web", "/node", "unix:uid:1000"))
    assert dup[0].status.code == Status.ALREADY_EXISTS.value
    assert dup[0].entry.id == ids[0]
    upd = await stub.BatchUpdateEntry(
        entry_pb2.BatchUpdateEntryRequest(
            entries=[types_entry.Entry(id=ids[0], hint="frontend")],
            input_mask=types_entry.EntryMask(hint=True),
        )
    )
    assert upd.results[0].status.code == 0
    assert upd.results[0].entry.hint == "frontend"
    assert upd.results[0].entry.revision_number == 1
    assert upd.results[0].entry.spiffe_id.path == "/web"
    deleted = await stub.BatchDeleteEntry(entry_pb2.BatchDeleteEntryRequest(ids=[ids[1], "nope"]))
    assert [r.status.code for r in deleted.results] == [0, Status.NOT_FOUND.value]
    assert await count_entries(harness) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (entry("/web", "/node"), "entry.selectors: at least one selector is required"),
        (entry("/spire/x", "/node", "a:b"), "reserved /spire namespace"),
        (entry("/a//b", "/node", "a:b"), "empty segments"),
        (entry("", "/node", "a:b"), "has no path"),
    ],
)
async def test_entry_bad_input_names_the_rule_and_writes_nothing(
    harness: Harness, bad: types_entry.Entry, message: str
) -> None:
    results = await create(harness, bad)
    assert results[0].status.code == Status.INVALID_ARGUMENT.value
    assert message in results[0].status.message
    assert await count_entries(harness) == 0


async def test_entry_ttls_and_dns_names_have_the_cas_limits(harness: Harness) -> None:
    """An entry the CA could never sign for is refused when it is created, not at signing."""
    at_limit = entry("/a", "/node", "a:b")
    at_limit.x509_svid_ttl = at_limit.jwt_svid_ttl = MAX_TTL_SECONDS
    at_limit.dns_names.extend(f"w{i}.example.org" for i in range(MAX_DNS_NAMES))
    long_ttl = entry("/b", "/node", "a:b")
    long_ttl.x509_svid_ttl = MAX_TTL_SECONDS + 1
    many_names = entry("/c", "/node", "a:b")
    many_names.dns_names.extend(f"w{i}.example.org" for i in range(MAX_DNS_NAMES + 1))
    results = await create(harness, at_limit, long_ttl, many_names)
    assert results[0].status.code == 0, results[0].status
    assert [r.status.code for r in results[1:]] == [Status.INVALID_ARGUMENT.value] * 2
    assert results[1].status.message == (
        f"entry.x509_svid_ttl: {MAX_TTL_SECONDS + 1}s exceeds the limit of {MAX_TTL_SECONDS}s"
    )
    assert results[2].status.message == f"entry.dns_names: more than {MAX_DNS_NAMES} names"


async def test_entry_foreign_trust_domain_rejected(harness: Harness) -> None:
    e = entry("/web", "/node", "a:b")
    e.spiffe_id.trust_domain = "other.org"
    results = await create(harness, e)
    assert results[0].status.code == Status.INVALID_ARGUMENT.value
    assert "not a member of trust domain" in results[0].status.message
    assert await count_entries(harness) == 0


async def test_oversize_page_size_is_invalid(harness: Harness) -> None:
    stub = harness.entry_stub(harness.local())
    with pytest.raises(GRPCError) as err:
        await stub.ListEntries(entry_pb2.ListEntriesRequest(page_size=1_000_000))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "page_size" in (err.value.message or "")


async def test_tcp_without_client_cert_cannot_use_admin_methods(harness: Harness) -> None:
    stub = harness.entry_stub(await harness.tls())
    with pytest.raises(GRPCError) as err:
        await stub.CountEntries(entry_pb2.CountEntriesRequest())
    assert err.value.status == Status.PERMISSION_DENIED


async def test_join_token_attestation_and_agent_flow(harness: Harness) -> None:
    token = await harness.join_token()
    agent = await harness.attest(token)
    assert agent.spiffe_id == SpiffeId.parse(f"spiffe://example.org/spire/agent/join_token/{token}")
    bundle = await harness.bundle()
    assert validate_x509_svid(agent.chain, bundle.x509_certificates(), harness.server.clock.now())
    # token is single use
    with pytest.raises(GRPCError) as err:
        await harness.attest(token)
    assert err.value.status == Status.PERMISSION_DENIED

    node_alias = entry("/cluster", "/spire/server", "spiffe_id:x")
    results = await create(
        harness,
        entry("/direct", f"/spire/agent/join_token/{token}", "unix:uid:1"),
        entry("/other", "/spire/agent/join_token/someone-else", "unix:uid:2"),
        node_alias,
    )
    ids = [r.entry.id for r in results]
    ch = await harness.tls(agent)
    stub = harness.entry_stub(ch)
    authorized = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert [e.id for e in authorized.entries] == [ids[0]]

    # signing: authorized entry yes, other agent's entry no; CSR SANs are ignored
    svid = harness.svid_stub(ch)
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await svid.BatchNewX509SVID(
        svid_pb2.BatchNewX509SVIDRequest(
            params=[
                {"entry_id": ids[0], "csr": make_csr(key, "spiffe://example.org/evil")},
                {"entry_id": ids[1], "csr": make_csr(key)},
            ]
        )
    )
    assert resp.results[0].status.code == 0
    leaf = x509.load_der_x509_certificate(resp.results[0].svid.cert_chain[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/direct"
    ]
    assert resp.results[1].status.code == Status.PERMISSION_DENIED.value
    jwt = await svid.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(entry_id=ids[0], audience=["db"]))
    bundle = await harness.bundle()
    parsed = validate_jwt_svid(
        jwt.svid.token, audience="db", authorities=bundle.jwt_keys(), now=harness.server.clock.now()
    )
    assert str(parsed.spiffe_id) == "spiffe://example.org/direct"
    with pytest.raises(GRPCError) as err:
        await svid.NewJWTSVID(svid_pb2.NewJWTSVIDRequest(entry_id=ids[1], audience=["db"]))
    assert err.value.status == Status.PERMISSION_DENIED


async def test_large_batch_is_checked_in_workers_and_answered_in_order(harness: Harness) -> None:
    """24 items (pooled CSR checks, pipelined with signing): each answer in its own slot."""
    token = await harness.join_token()
    agent = await harness.attest(token)
    parent = f"/spire/agent/join_token/{token}"
    results = await create(harness, *(entry(f"/w/{i}", parent, f"unix:uid:{i}") for i in range(22)))
    ids = [r.entry.id for r in results]
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in ids]
    params = [{"entry_id": i, "csr": make_csr(k)} for i, k in zip(ids, keys, strict=True)]
    tampered = bytearray(params[13]["csr"])
    tampered[-5] ^= 0xFF
    params[13]["csr"] = bytes(tampered)
    params.insert(17, {"entry_id": "no-such-entry", "csr": make_csr(keys[0])})
    params.append({"entry_id": ids[0], "csr": b"junk"})
    svid = harness.svid_stub(await harness.tls(agent))
    resp = await svid.BatchNewX509SVID(svid_pb2.BatchNewX509SVIDRequest(params=params))
    assert harness.server.ca is not None
    pool = harness.server.ca.batches.pool
    if pool.size:  # none on a single-core machine
        assert pool.workers(), "a batch this size goes to the workers"
    codes = [r.status.code for r in resp.results]
    assert len(codes) == 24
    assert codes[13] == codes[23] == Status.INVALID_ARGUMENT.value
    assert resp.results[13].status.message == "params[13].csr: CSR signature is invalid"
    assert "params[23].csr: malformed CSR" in resp.results[23].status.message
    assert codes[17] == Status.PERMISSION_DENIED.value
    bundle = (await harness.bundle()).x509_certificates()
    for slot, result in enumerate(resp.results):
        if slot in (13, 17, 23):
            continue
        n = slot if slot < 17 else slot - 1
        chain = [x509.load_der_x509_certificate(c) for c in result.svid.cert_chain]
        assert str(validate_x509_svid(chain, bundle, harness.server.clock.now())) == (
            f"spiffe://example.org/w/{n}"
        )
        assert chain[0].public_key() == keys[n].public_key()


async def test_two_concurrent_attestations_with_one_token(harness: Harness) -> None:
    token = await harness.join_token()
    outcomes = await asyncio.gather(
        harness.attest(token), harness.attest(token), return_exceptions=True
    )
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, GRPCError)]
    assert len(ok) == 1 and len(failed) == 1
    assert failed[0].status == Status.PERMISSION_DENIED
    agents = await agent_grpc.AgentStub(harness.local()).CountAgents(agent_pb2.CountAgentsRequest())
    assert agents.count == 1


async def test_expired_join_token_rejected(harness: Harness) -> None:
    token = await harness.join_token(ttl=1)
    harness.server.clock = harness.server.clock  # system clock: wait for real expiry
    await asyncio.sleep(1.5)
    with pytest.raises(GRPCError) as err:
        await harness.attest(token)
    assert "expired" in (err.value.message or "")


async def test_ban_and_evict(harness: Harness) -> None:
    agent = await harness.attest(await harness.join_token())
    admin = agent_grpc.AgentStub(harness.local())
    aid = {"trust_domain": "example.org", "path": agent.spiffe_id.path}
    ch = await harness.tls(agent)
    stub = harness.entry_stub(ch)
    await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    await admin.BanAgent(agent_pb2.BanAgentRequest(id=aid))
    with pytest.raises(GRPCError) as err:
        await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert err.value.status == Status.PERMISSION_DENIED
    details = err.value.details or []
    assert details and details[0].reason == status_pb2.PermissionDeniedDetails.AGENT_BANNED
    shown = await admin.GetAgent(agent_pb2.GetAgentRequest(id=aid))
    assert shown.banned
    await admin.DeleteAgent(agent_pb2.DeleteAgentRequest(id=aid))
    with pytest.raises(GRPCError) as err:
        await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert err.value.details[0].reason == status_pb2.PermissionDeniedDetails.AGENT_NOT_ATTESTED


async def test_a_ban_made_by_another_server_refuses_the_agent_after_the_cache_poll(
    harness: Harness,
) -> None:
    agent = await harness.attest(await harness.join_token())
    stub = harness.entry_stub(await harness.tls(agent))
    await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())  # remembered
    datastore, cache = harness.server.datastore, harness.server.cache
    assert datastore is not None and cache is not None
    # Straight to the shared datastore, as another server's BanAgent would write it.
    await datastore.update_attested_node(agent.spiffe_id, cert_serial="", new_cert_serial="")
    await cache.refresh()
    with pytest.raises(GRPCError) as err:
        await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert err.value.details[0].reason == status_pb2.PermissionDeniedDetails.AGENT_BANNED


async def test_renew_agent_promotes_new_serial(harness: Harness) -> None:
    agent = await harness.attest(await harness.join_token())
    stub = agent_grpc.AgentStub(await harness.tls(agent))
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await stub.RenewAgent(agent_pb2.RenewAgentRequest(params={"csr": make_csr(key)}))
    new_chain = [x509.load_der_x509_certificate(c) for c in resp.svid.cert_chain]
    renewed = type(agent)(agent.spiffe_id, new_chain, key)
    entries = harness.entry_stub(await harness.tls(renewed))
    await entries.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    node = await harness.server.datastore.fetch_attested_node(agent.spiffe_id)  # type: ignore[union-attr]
    assert node is not None and node.cert_serial == str(new_chain[0].serial_number)
    # the old SVID is no longer active
    old = harness.entry_stub(await harness.tls(agent))
    with pytest.raises(GRPCError) as err:
        await old.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest())
    assert err.value.details[0].reason == status_pb2.PermissionDeniedDetails.AGENT_NOT_ACTIVE


async def test_attestation_bad_input(harness: Harness) -> None:
    stub = agent_grpc.AgentStub(await harness.tls())
    key = ec.generate_private_key(ec.SECP256R1())
    cases = [
        (
            attest_params("nope", b"x", make_csr(key)),
            Status.FAILED_PRECONDITION,
            "unknown attestation type",
        ),
        (attest_params("join_token", b"x", b"garbage"), Status.INVALID_ARGUMENT, "malformed CSR"),
        (
            attest_params("", b"x", make_csr(key)),
            Status.INVALID_ARGUMENT,
            "missing attestation data type",
        ),
        (attest_params("join_token", b"", make_csr(key)), Status.INVALID_ARGUMENT, "payload"),
    ]
    for req, status, text in cases:
        with pytest.raises(GRPCError) as err:
            async with stub.AttestAgent.open() as stream:
                await stream.send_message(req)
                await stream.recv_message()
        assert err.value.status == status, (err.value, text)
        assert text in (err.value.message or "")
    count = await agent_grpc.AgentStub(harness.local()).CountAgents(agent_pb2.CountAgentsRequest())
    assert count.count == 0


async def test_mint_x509_and_jwt_svid(harness: Harness) -> None:
    svid = harness.svid_stub(harness.local())
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await svid.MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, "spiffe://example.org/minted"), ttl=120)
    )
    chain = [x509.load_der_x509_certificate(c) for c in resp.svid.cert_chain]
    bundle = await harness.bundle()
    sid = validate_x509_svid(chain, bundle.x509_certificates(), harness.server.clock.now())
    assert str(sid) == "spiffe://example.org/minted"
    with pytest.raises(GRPCError) as err:
        await svid.MintX509SVID(
            svid_pb2.MintX509SVIDRequest(csr=make_csr(key, "spiffe://other.org/x"))
        )
    assert err.value.status == Status.INVALID_ARGUMENT
    jwt = await svid.MintJWTSVID(
        svid_pb2.MintJWTSVIDRequest(
            id={"trust_domain": "example.org", "path": "/j"}, audience=["a"]
        )
    )
    assert validate_jwt_svid(
        jwt.svid.token, audience="a", authorities=bundle.jwt_keys(), now=harness.server.clock.now()
    )


async def test_get_bundle_is_public_and_federated_bundles(harness: Harness) -> None:
    stub = harness.bundle_stub(await harness.tls())
    own = await stub.GetBundle(bundle_pb2.GetBundleRequest())
    assert own.trust_domain == TD.name and own.x509_authorities and own.jwt_authorities
    admin = harness.bundle_stub(harness.local())
    fed = bundle_pb2.BatchSetFederatedBundleRequest(
        bundle=[{"trust_domain": "other.org", "x509_authorities": [own.x509_authorities[0]]}]
    )
    resp = await admin.BatchSetFederatedBundle(fed)
    assert resp.results[0].status.code == 0
    listed = await admin.ListFederatedBundles(bundle_pb2.ListFederatedBundlesRequest())
    assert [b.trust_domain for b in listed.bundles] == ["other.org"]
    same = bundle_pb2.BatchSetFederatedBundleRequest(
        bundle=[{"trust_domain": "example.org", "x509_authorities": [own.x509_authorities[0]]}]
    )
    resp = await admin.BatchSetFederatedBundle(same)
    assert resp.results[0].status.code == Status.INVALID_ARGUMENT.value


class _AskingAttestor:
    """A real challenge-response method for the test: it asks once and expects b"pong"."""

    name = "asking"

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def attest(self, payload: bytes, challenge):  # type: ignore[no-untyped-def]
        try:
            answer = await challenge(b"ping")
            if answer != b"pong":
                raise AttestationFailed("asking: wrong answer")
            return AttestationResult(
                agent_id=SpiffeId.parse("spiffe://example.org/spire/agent/asking/1")
            )
        finally:
            self.finished.set()


async def test_agent_that_never_answers_is_dropped_after_the_deadline(harness: Harness) -> None:
    assert harness.server.api is not None
    asking = _AskingAttestor()
    harness.server.api.attestors["asking"] = asking  # type: ignore[assignment]
    harness.server.api.challenge_timeout = 0.5
    stub = agent_grpc.AgentStub(await harness.tls())
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(GRPCError) as err:
        async with stub.AttestAgent.open() as stream:
            await stream.send_message(attest_params("asking", b"hello", make_csr(key)))
            first = await stream.recv_message()
            assert first is not None and first.challenge == b"ping"
            await stream.recv_message()  # never answer: the server gives up
    assert err.value.status == Status.DEADLINE_EXCEEDED
    assert "challenge response not received" in (err.value.message or "")
    await asyncio.wait_for(asking.finished.wait(), 5)  # the server task is freed
    count = await agent_grpc.AgentStub(harness.local()).CountAgents(agent_pb2.CountAgentsRequest())
    assert count.count == 0
    # and a wrong answer is refused with no node record
    with pytest.raises(GRPCError) as err:
        async with stub.AttestAgent.open() as stream:
            await stream.send_message(attest_params("asking", b"hello", make_csr(key)))
            await stream.recv_message()
            await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=b"nope"))
            await stream.recv_message()
    assert err.value.status == Status.PERMISSION_DENIED
    assert "wrong answer" in (err.value.message or "")


async def test_join_token_with_agent_id_creates_alias_entry_when_used(harness: Harness) -> None:
    """SPIRE makes the alias entry at once; its parent ID contains the token, so Plastron makes
    it when the token is used, and the live token is never in the entry tables."""
    stub = agent_grpc.AgentStub(harness.local())
    resp = await stub.CreateJoinToken(
        agent_pb2.CreateJoinTokenRequest(
            ttl=60, agent_id={"trust_domain": "example.org", "path": "/node"}
        )
    )
    assert await count_entries(harness) == 0
    agent = await harness.attest(resp.value)
    listed = await harness.entry_stub(harness.local()).ListEntries(entry_pb2.ListEntriesRequest())
    assert len(listed.entries) == 1
    alias = listed.entries[0]
    assert alias.parent_id.path == f"/spire/agent/join_token/{resp.value}" == agent.spiffe_id.path
    assert alias.spiffe_id.path == "/node"
    assert [(s.type, s.value) for s in alias.selectors] == [("spiffe_id", str(agent.spiffe_id))]
    # The agent is authorized for entries parented to its alias at once.
    workload = await create(harness, entry("/web", "/node", "unix:uid:1"))
    authorized = await harness.entry_stub(await harness.tls(agent)).GetAuthorizedEntries(
        entry_pb2.GetAuthorizedEntriesRequest()
    )
    assert {e.id for e in authorized.entries} >= {workload[0].entry.id}
    for bad, text in [(0, "ttl"), (60, "agent_id")]:
        req = agent_pb2.CreateJoinTokenRequest(ttl=bad)
        if text == "agent_id":
            req.agent_id.trust_domain = "other.org"
            req.agent_id.path = "/x"
        with pytest.raises(GRPCError) as err:
            await stub.CreateJoinToken(req)
        assert err.value.status == Status.INVALID_ARGUMENT
        assert text in (err.value.message or "")
    assert await count_entries(harness) == 2


def _id(path: str, td: str = "example.org") -> dict[str, str]:
    return {"trust_domain": td, "path": path}


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (
            {"by_spiffe_id": _id("/spire/agent/join_token/t")},
            "filter.by_spiffe_id: spiffe://example.org/spire/agent/join_token/t is in the "
            "reserved /spire namespace",
        ),
        ({"by_spiffe_id": _id("")}, "filter.by_spiffe_id: spiffe://example.org has no path"),
        (
            {"by_spiffe_id": _id("/web", "other.org")},
            "filter.by_spiffe_id: spiffe://other.org/web is not a member of trust domain "
            "'example.org'",
        ),
        ({"by_parent_id": _id("")}, "filter.by_parent_id: spiffe://example.org has no path"),
        (
            {"by_parent_id": _id("/node", "other.org")},
            "filter.by_parent_id: spiffe://other.org/node is not a member of trust domain "
            "'example.org'",
        ),
    ],
)
async def test_entry_id_filters_are_checked_as_spire_does(
    harness: Harness, flt: dict[str, dict[str, str]], message: str
) -> None:
    """SPIRE's ListEntries/CountEntries: by_spiffe_id must be a workload ID of the trust domain
    (not /spire/...), by_parent_id any ID of it with a path; anything else INVALID_ARGUMENT."""
    stub = harness.entry_stub(harness.local())
    with pytest.raises(GRPCError) as listed:
        await stub.ListEntries(
            entry_pb2.ListEntriesRequest(filter=entry_pb2.ListEntriesRequest.Filter(**flt))  # type: ignore[arg-type]
        )
    with pytest.raises(GRPCError) as counted:
        await stub.CountEntries(
            entry_pb2.CountEntriesRequest(filter=entry_pb2.CountEntriesRequest.Filter(**flt))  # type: ignore[arg-type]
        )
    for raised in (listed.value, counted.value):
        assert (raised.status, raised.message) == (Status.INVALID_ARGUMENT, message)


async def test_entry_parent_filter_takes_an_agent_id(harness: Harness) -> None:
    await create(harness, entry("/web", "/spire/agent/join_token/t", "unix:uid:1"))
    flt = entry_pb2.ListEntriesRequest.Filter(by_parent_id=_id("/spire/agent/join_token/t"))  # type: ignore[arg-type]
    listed = await harness.entry_stub(harness.local()).ListEntries(
        entry_pb2.ListEntriesRequest(filter=flt)
    )
    assert [e.spiffe_id.path for e in listed.entries] == ["/web"]
