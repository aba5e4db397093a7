from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from agent_authority import TestAuthority
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.agent.identity import other_slot, random_jitter, rotation_due
from plastron.agent.storage import AgentState, AgentStorage
from plastron.agent.wire import (
    REASONS,
    bundle_from_server,
    csr_der,
    entry_from_proto,
    permission_denied_reason,
    svid_with_key,
)
from plastron.errors import InvalidArgument, InvalidBundle, InvalidSvid
from plastron.proto.spire.api.types import bundle_pb2, entry_pb2, status_pb2, x509svid_pb2
from plastron.wire.svids import chain_from_proto

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def ca() -> TestAuthority:
    return TestAuthority("example.org", NOW)


def test_state_round_trips_atomically_with_private_mode(tmp_path: Path, ca: TestAuthority) -> None:
    storage = AgentStorage(tmp_path / "data")
    assert storage.load() is None
    svid = ca.svid("/spire/agent/join_token/t")
    state = AgentState(svid.chain, "agent-svid-A", ca.bundle, reattestable=True)
    storage.save(state)
    assert storage.load() == state
    assert stat.S_IMODE(os.stat(storage.path).st_mode) == 0o600
    assert [p.name for p in storage.data_dir.iterdir()] == ["agent-data.json"]
    storage.delete_svid()
    assert storage.load() is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(version=2),
        lambda d: d.update(svid=[]),
        lambda d: d.update(svid=["bm90LWEtY2VydA=="]),
        lambda d: d.update(reattestable="yes"),
        lambda d: d.pop("bundle"),
    ],
)
def test_corrupt_state_is_refused(tmp_path: Path, ca: TestAuthority, mutate: object) -> None:
    storage = AgentStorage(tmp_path)
    storage.save(AgentState(ca.svid("/a").chain, "agent-svid-A", ca.bundle))
    doc = json.loads(storage.path.read_text())
    mutate(doc)  # type: ignore[operator]
    storage.path.write_text(json.dumps(doc))
    with pytest.raises(InvalidArgument, match=r"agent-data\.json"):
        storage.load()


def test_rotation_at_half_life_with_jitter(ca: TestAuthority) -> None:
    svid = ca.svid("/a", ttl=dt.timedelta(hours=1), start=NOW)
    assert not rotation_due(svid, NOW + dt.timedelta(minutes=29), 0.0)
    assert rotation_due(svid, NOW + dt.timedelta(minutes=31), 0.0)
    # +10% jitter rotates earlier, -10% later.
    assert rotation_due(svid, NOW + dt.timedelta(minutes=28), 0.1)
    assert not rotation_due(svid, NOW + dt.timedelta(minutes=32), -0.1)
    jitters = {random_jitter() for _ in range(200)}
    assert all(-0.1 <= j <= 0.1 for j in jitters) and len(jitters) > 10
    assert other_slot("agent-svid-A") == "agent-svid-B"
    assert other_slot("agent-svid-B") == "agent-svid-A"


def test_server_svid_must_certify_our_key(ca: TestAuthority) -> None:
    svid = ca.svid("/w")
    assert svid.private_key is not None
    assert svid_with_key(list(svid.chain), svid.private_key).spiffe_id == svid.spiffe_id
    with pytest.raises(InvalidSvid, match="not ours"):
        svid_with_key(list(svid.chain), ec.generate_private_key(ec.SECP256R1()))


def test_chain_bounds(ca: TestAuthority) -> None:
    der = ca.svid("/w").chain_der()
    assert len(chain_from_proto(x509svid_pb2.X509SVID(cert_chain=[der]))) == 1
    with pytest.raises(InvalidSvid, match="empty"):
        chain_from_proto(x509svid_pb2.X509SVID())
    with pytest.raises(InvalidSvid, match="17 certificates"):
        chain_from_proto(x509svid_pb2.X509SVID(cert_chain=[der] * 17))
    with pytest.raises(InvalidSvid, match="unparsable"):
        chain_from_proto(x509svid_pb2.X509SVID(cert_chain=[b"junk"]))


def test_bundle_and_entry_from_proto(ca: TestAuthority) -> None:
    der = serialization.Encoding.DER
    msg = bundle_pb2.Bundle(trust_domain="example.org", sequence_number=3)
    msg.x509_authorities.add(asn1=ca.ca.public_bytes(der))
    msg.jwt_authorities.add(
        key_id=ca.jwt_kid,
        public_key=ca.jwt_key.public_key().public_bytes(
            der, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    bundle = bundle_from_server(msg)
    assert bundle.x509_certificates() == [ca.ca] and ca.jwt_kid in bundle.jwt_keys()
    bad = bundle_pb2.Bundle(trust_domain="Example.org")
    with pytest.raises(InvalidBundle):
        bundle_from_server(bad)
    junk = bundle_pb2.Bundle(trust_domain="example.org")
    junk.x509_authorities.add(asn1=b"junk")
    with pytest.raises(InvalidBundle):
        bundle_from_server(junk)
    entry = entry_pb2.Entry(id="e1", hint="h", revision_number=4, federates_with=["other.org"])
    entry.spiffe_id.trust_domain, entry.spiffe_id.path = "example.org", "/w"
    entry.selectors.add(type="unix", value="uid:0")
    parsed = entry_from_proto(entry)
    assert str(parsed.spiffe_id) == "spiffe://example.org/w" and parsed.revision == 4
    with pytest.raises(InvalidArgument):
        entry_from_proto(entry_pb2.Entry(id=""))


def test_csr_carries_our_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_der_x509_csr(csr_der(key))
    assert csr.is_signature_valid and csr.public_key() == key.public_key()


def test_permission_denied_reason() -> None:
    banned = status_pb2.PermissionDeniedDetails(reason=REASONS.AGENT_BANNED)
    err = GRPCError(Status.PERMISSION_DENIED, "banned", [banned])
    assert permission_denied_reason(err) == REASONS.AGENT_BANNED
    assert permission_denied_reason(GRPCError(Status.PERMISSION_DENIED, "x")) is None
