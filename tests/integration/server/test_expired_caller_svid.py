"""An admin or downstream caller whose X509-SVID expires is refused from the next call on,
as an agent is, also on a TLS connection it opened while the SVID was valid: the server checks
the SVID's expiry per call, by its own clock (a ManualClock here, moved past the expiry)."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.clock import ManualClock
from plastron.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from plastron.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from plastron.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from plastron.proto.spire.api.types import entry_pb2 as types_entry
from plastron.spiffe.ids import SpiffeId

from .server_harness import TD, AgentIdentity, Harness, make_csr, running_server

ADMIN = TD.spiffe_id("/ops/admin")
DOWNSTREAM = TD.spiffe_id("/nested/downstream")
SVID_TTL = 600


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pl-exp-", dir="/tmp"))  # socket paths must stay short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def mint(h: Harness, sid: SpiffeId) -> AgentIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await svid_grpc.SVIDStub(h.local()).MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, str(sid)), ttl=SVID_TTL)
    )
    chain = [x509.load_der_x509_certificate(c) for c in resp.svid.cert_chain]
    return AgentIdentity(sid, chain, key)


async def add_downstream_entry(h: Harness) -> None:
    entry = types_entry.Entry(
        spiffe_id={"trust_domain": TD.name, "path": DOWNSTREAM.path},
        parent_id={"trust_domain": TD.name, "path": "/spire/server"},
        selectors=[{"type": "unix", "value": "uid:1"}],
        downstream=True,
    )
    resp = await entry_grpc.EntryStub(h.local()).BatchCreateEntry(
        entry_pb2.BatchCreateEntryRequest(entries=[entry])
    )
    assert resp.results[0].status.code == 0, resp


async def admin_call(channel: Channel) -> GRPCError | None:
    try:
        await entry_grpc.EntryStub(channel).CountEntries(entry_pb2.CountEntriesRequest())
        return None
    except GRPCError as exc:
        return exc


async def downstream_call(channel: Channel) -> GRPCError:
    """PublishJWTAuthority without an authority: INVALID_ARGUMENT once authorized."""
    try:
        await bundle_grpc.BundleStub(channel).PublishJWTAuthority(
            bundle_pb2.PublishJWTAuthorityRequest()
        )
    except GRPCError as exc:
        return exc
    raise AssertionError("an empty PublishJWTAuthority was accepted")


async def test_expired_admin_and_downstream_svids_stop_authorizing(short_tmp: Path) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))  # TLS handshakes see real time
    async with running_server(short_tmp, extra_server=f'admin_ids = ["{ADMIN}"]', clock=clock) as h:
        await add_downstream_entry(h)
        admin, downstream = await mint(h, ADMIN), await mint(h, DOWNSTREAM)
        admin_channel, downstream_channel = await h.tls(admin), await h.tls(downstream)

        assert await admin_call(admin_channel) is None
        allowed = await downstream_call(downstream_channel)
        assert allowed.status == Status.INVALID_ARGUMENT, allowed

        expiry = max(admin.chain[0].not_valid_after_utc, downstream.chain[0].not_valid_after_utc)
        clock.set(expiry + dt.timedelta(seconds=1))

        refused = await admin_call(admin_channel)
        assert refused is not None
        assert (refused.status, refused.message) == (
            Status.PERMISSION_DENIED,
            "admin SVID has expired",
        )
        refused = await downstream_call(downstream_channel)
        assert (refused.status, refused.message) == (
            Status.PERMISSION_DENIED,
            "downstream SVID has expired",
        )
