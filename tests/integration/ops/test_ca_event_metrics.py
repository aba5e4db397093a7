"""The CA lifecycle counters move with the LocalAuthority API: prepare, activate, taint, revoke
(and the revoked authority's key destroyed), each counted once under its kind."""

from __future__ import annotations

from pathlib import Path

from plastron.proto.spire.api.server.localauthority.v1 import localauthority_grpc
from plastron.proto.spire.api.server.localauthority.v1 import localauthority_pb2 as la
from plastron.server.metrics import REGISTRY
from tests.integration.server.server_harness import running_server

EVENTS = ("prepared", "activated", "tainted", "revoked")


def _counts(kind: str) -> dict[str, float]:
    return {
        event: REGISTRY.get_sample_value(
            "plastron_server_ca_events_total", {"kind": kind, "event": event}
        )
        or 0.0
        for event in EVENTS
    }


async def test_x509_authority_events_are_counted(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        stub = localauthority_grpc.LocalAuthorityStub(h.local())
        before = _counts("x509")
        first = (await stub.GetX509AuthorityState(la.GetX509AuthorityStateRequest())).active
        second = (
            await stub.PrepareX509Authority(la.PrepareX509AuthorityRequest())
        ).prepared_authority
        await stub.ActivateX509Authority(
            la.ActivateX509AuthorityRequest(authority_id=second.authority_id)
        )
        await stub.TaintX509Authority(la.TaintX509AuthorityRequest(authority_id=first.authority_id))
        await stub.RevokeX509Authority(
            la.RevokeX509AuthorityRequest(authority_id=first.authority_id)
        )
        after = _counts("x509")
    assert {event: after[event] - before[event] for event in EVENTS} == dict.fromkeys(EVENTS, 1.0)
