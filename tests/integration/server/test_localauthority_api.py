"""The LocalAuthority API on a real server (admin socket): SPIRE's prepare/activate/taint/revoke
sequence for X.509 and JWT authorities, each refusal with its code and a message naming the
authority, and what each step does to the bundle and the KeyManager."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.errors import PlastronError
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as la
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.server.ca.leaves import LeafPlan, sign_leaf
from plastron.spiffe.ids import SpiffeId
from plastron.spiffe.taint import chained_to
from plastron.spiffe.x509svid import validate_x509_svid
from tests.integration.server.server_harness import Harness, make_csr, running_server


async def refused(call: Any, request: Any) -> tuple[Status, str]:
    with pytest.raises(GRPCError) as err:
        await call(request)
    return err.value.status, err.value.message or ""


def held_key_ids(h: Harness) -> set[str]:
    assert h.server.key_manager is not None
    return {info.key_id for info in h.server.key_manager.get_public_keys()}


async def mint(h: Harness) -> list[x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await h.svid_stub(h.local()).MintX509SVID(
        svid_pb2.MintX509SVIDRequest(csr=make_csr(key, "spiffe://example.org/la"))
    )
    return [x509.load_der_x509_certificate(c) for c in resp.svid.cert_chain]


async def test_x509_prepare_activate_taint_revoke(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        state = await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())
        first = state.active.authority_id
        assert first and not state.HasField("prepared") and not state.HasField("old")

        # Nothing prepared: activating anything names what is wrong.
        code, msg = await refused(
            stub.ActivateX509Authority, la.ActivateX509AuthorityRequest(authority_id=first)
        )
        assert code == Status.INVALID_ARGUMENT and "unexpected authority ID" in msg, msg
        code, msg = await refused(
            stub.ActivateX509Authority, la.ActivateX509AuthorityRequest(authority_id="")
        )
        assert code == Status.INVALID_ARGUMENT and "no authority ID provided" in msg

        prepared = await stub.PrepareX509Authority(la.PrepareX509AuthorityRequest())
        second = prepared.prepared_authority.authority_id
        assert second and second != first and prepared.prepared_authority.expires_at > 0
        assert second in {a.authority_id for a in (await h.bundle()).x509_authorities}
        code, msg = await refused(
            stub.TaintX509Authority, la.TaintX509AuthorityRequest(authority_id=second)
        )
        assert code == Status.INVALID_ARGUMENT and "only Old" in msg and second in msg, msg
        code, msg = await refused(
            stub.TaintX509Authority, la.TaintX509AuthorityRequest(authority_id=first)
        )
        assert code == Status.INVALID_ARGUMENT and "unable to taint current" in msg, msg

        activated = await stub.ActivateX509Authority(
            la.ActivateX509AuthorityRequest(authority_id=second)
        )
        assert activated.activated_authority.authority_id == second
        state = await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())
        assert (state.active.authority_id, state.old.authority_id) == (second, first)
        code, msg = await refused(
            stub.ActivateX509Authority, la.ActivateX509AuthorityRequest(authority_id=first)
        )
        assert code == Status.FAILED_PRECONDITION and "only Prepared" in msg, msg

        # Revoke before taint is refused, and leaves the bundle as it was.
        code, msg = await refused(
            stub.RevokeX509Authority, la.RevokeX509AuthorityRequest(authority_id=first)
        )
        assert code == Status.FAILED_PRECONDITION and "untainted" in msg and first in msg, msg
        assert first in {a.authority_id for a in (await h.bundle()).x509_authorities}

        old_chain = await mint_signed_by_old(h)
        old_ca = next(
            a.certificate for a in (await h.bundle()).x509_authorities if a.authority_id == first
        )
        assert chained_to([await server_leaf(h)], [old_ca])
        tainted = await stub.TaintX509Authority(la.TaintX509AuthorityRequest(authority_id=first))
        assert tainted.tainted_authority.authority_id == first
        # The server moved its own SVID off the tainted authority before answering.
        assert not chained_to([await server_leaf(h)], [old_ca])
        flags = {a.authority_id: a.tainted for a in (await h.bundle()).x509_authorities}
        assert flags == {first: True, second: False}
        code, msg = await refused(
            stub.TaintX509Authority, la.TaintX509AuthorityRequest(authority_id=first)
        )
        assert code == Status.INVALID_ARGUMENT and "already tainted" in msg, msg

        slot_key = h.server.ca.manager.next_x509.key_id  # type: ignore[union-attr]
        assert slot_key in held_key_ids(h)
        revoked = await stub.RevokeX509Authority(la.RevokeX509AuthorityRequest(authority_id=first))
        assert revoked.revoked_authority.authority_id == first
        bundle = await h.bundle()
        assert [a.authority_id for a in bundle.x509_authorities] == [second]
        assert slot_key not in held_key_ids(h)  # the revoked authority's key is destroyed
        state = await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())
        assert state.active.authority_id == second and not state.HasField("old")
        now = h.server.clock.now()
        with pytest.raises(PlastronError):
            validate_x509_svid(old_chain, bundle.x509_certificates(), now)
        assert validate_x509_svid(await mint(h), bundle.x509_certificates(), now)


async def server_leaf(h: Harness) -> x509.Certificate:
    """The X509-SVID the server presents on its TCP port right now."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only the certificate is read
    ctx.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", h.port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


async def mint_signed_by_old(h: Harness) -> list[x509.Certificate]:
    """An SVID of the authority about to be tainted: the current one before activation is
    gone, so sign one directly with the OLD slot's key through the KeyManager."""
    manager = h.server.ca.manager  # type: ignore[union-attr]
    old = manager.next_x509
    assert old is not None and h.server.key_manager is not None
    plan = LeafPlan(SpiffeId.parse("spiffe://example.org/old"), old.not_after, ())
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = sign_leaf(
        plan,
        key.public_key(),
        issuer=old.certificate,
        issuer_key=h.server.key_manager.signer(old.key_id),
        not_before=h.server.clock.now(),
    )
    chain = [leaf]
    assert validate_x509_svid(chain, (await h.bundle()).x509_certificates(), h.server.clock.now())
    return chain


async def test_jwt_prepare_activate_taint_revoke(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        first = (await stub.GetJWTAuthorityState(la.GetJWTAuthorityStateRequest())).active
        second = (
            await stub.PrepareJWTAuthority(la.PrepareJWTAuthorityRequest())
        ).prepared_authority
        code, msg = await refused(
            stub.RevokeJWTAuthority, la.RevokeJWTAuthorityRequest(authority_id=second.authority_id)
        )
        assert code == Status.INVALID_ARGUMENT and "prepared key" in msg, msg
        # SPIRE's prefix names the step that refused; the refusal keeps its own code
        assert msg.startswith("invalid authority ID: unable to use"), msg
        await stub.ActivateJWTAuthority(
            la.ActivateJWTAuthorityRequest(authority_id=second.authority_id)
        )
        code, msg = await refused(
            stub.RevokeJWTAuthority, la.RevokeJWTAuthorityRequest(authority_id=first.authority_id)
        )
        assert code == Status.FAILED_PRECONDITION and "untainted" in msg, msg
        assert msg.startswith("failed to revoke JWT authority: "), msg
        await stub.TaintJWTAuthority(la.TaintJWTAuthorityRequest(authority_id=first.authority_id))
        bundle = await h.bundle()
        assert {a.key_id: a.tainted for a in bundle.jwt_authorities} == {
            first.authority_id: True,
            second.authority_id: False,
        }
        slot_key = h.server.ca.manager.next_jwt.key_id  # type: ignore[union-attr]
        await stub.RevokeJWTAuthority(la.RevokeJWTAuthorityRequest(authority_id=first.authority_id))
        assert list((await h.bundle()).jwt_keys()) == [second.authority_id]
        assert slot_key not in held_key_ids(h)


async def test_upstream_and_wit_calls_without_them(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        code, msg = await refused(
            stub.TaintX509UpstreamAuthority,
            la.TaintX509UpstreamAuthorityRequest(subject_key_id="ab"),
        )
        assert code == Status.FAILED_PRECONDITION and "upstream authority is not configured" in msg
        code, msg = await refused(
            stub.RevokeX509UpstreamAuthority,
            la.RevokeX509UpstreamAuthorityRequest(subject_key_id="ab"),
        )
        assert code == Status.FAILED_PRECONDITION
        code, msg = await refused(stub.GetWITAuthorityState, la.GetWITAuthorityStateRequest())
        assert code == Status.UNIMPLEMENTED and "WIT-SVID" in msg
