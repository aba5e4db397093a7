"""BatchNewX509SVID fills each item's Result in place (server/api/svid.py): the bytes on the
wire are the ones the message built field by field gives, and an OK status is present (SPIRE's
agent reads ``Status.Code`` without a nil check)."""

from __future__ import annotations

import datetime as dt

from plastron.errors import InvalidArgument
from plastron.proto.spire.api.server.svid.v1 import svid_pb2
from plastron.proto.spire.api.types import status_pb2
from plastron.records import RegistrationEntry
from plastron.selector import Selector
from plastron.server.api.svid import _set_batch_result
from plastron.server.ca.batch_signing import SignedX509Svid
from plastron.spiffe.ids import TrustDomain
from plastron.wire.svids import x509_svid_der_to_proto

TD = TrustDomain("example.org")
NOT_AFTER = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
Result = svid_pb2.BatchNewX509SVIDResponse.Result


def entry(hint: str = "") -> RegistrationEntry:
    return RegistrationEntry(
        entry_id="e1",
        spiffe_id=TD.spiffe_id("/w/1"),
        parent_id=TD.spiffe_id("/spire/agent/x/1"),
        selectors=(Selector("unix", "uid:1"),),
        hint=hint,
    )


def filled(signed: SignedX509Svid | InvalidArgument, e: RegistrationEntry) -> bytes:
    response = svid_pb2.BatchNewX509SVIDResponse()
    _set_batch_result(response.results.add(), signed, e)
    return response.SerializeToString()


def built(result: svid_pb2.BatchNewX509SVIDResponse.Result) -> bytes:
    return svid_pb2.BatchNewX509SVIDResponse(results=[result]).SerializeToString()


def test_an_issued_svid_is_the_message_built_field_by_field() -> None:
    signed = SignedX509Svid((b"leaf", b"intermediate"), NOT_AFTER)
    for hint in ("", "external"):
        e = entry(hint)
        svid = x509_svid_der_to_proto(list(signed.chain), e.spiffe_id, NOT_AFTER, hint)
        expected = Result(status=status_pb2.Status(code=0, message=""), svid=svid)
        assert filled(signed, e) == built(expected)
        [got] = svid_pb2.BatchNewX509SVIDResponse.FromString(filled(signed, e)).results
        assert got.HasField("status") and got.status.code == 0


def test_a_refused_item_carries_its_status_and_no_svid() -> None:
    refusal = InvalidArgument("params[0].csr: CSR signature is invalid")
    [got] = svid_pb2.BatchNewX509SVIDResponse.FromString(filled(refusal, entry())).results
    assert got.status.code == 3 and got.status.message == str(refusal)
    assert not got.HasField("svid")
