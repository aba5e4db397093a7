"""The CA signs no workload SVID for a reserved ID (/spire, /spire/server, /spire/agent/...)
or an empty path, whichever of its entry points is used; the server's own SVID and agent
SVIDs still come from their dedicated calls."""

from __future__ import annotations

import datetime as dt

import pytest
from ca_unit_support import TD
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import ManualClock
from plastron.errors import InvalidArgument
from plastron.server.ca.server_ca import LeafPlan, ServerCA, WorkloadSvidRequest
from plastron.spiffe.ids import SpiffeId, server_id
from plastron.spiffe.x509svid import spiffe_id_from_certificate

REFUSED = [
    ("/spire/server", "reserved /spire namespace"),
    ("/spire/agent/join_token/abc", "reserved /spire namespace"),
    ("/spire", "reserved /spire namespace"),
    ("/spire/anything/else", "reserved /spire namespace"),
    ("", "has no path"),
]
#: Near misses that are ordinary workload paths.
ALLOWED = ["/spire-server", "/spirex/server", "/ns/spire/server", "/SPIRE/server"]


def _key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


@pytest.mark.parametrize(("path", "message"), REFUSED)
async def test_every_workload_signing_call_refuses_reserved_and_empty_ids(
    ca: ServerCA, path: str, message: str
) -> None:
    sid = SpiffeId(TD, path)
    with pytest.raises(InvalidArgument, match=message) as err:
        await ca.sign_workload_x509_svid(spiffe_id=sid, public_key=_key())
    assert str(sid) in str(err.value)
    with pytest.raises(InvalidArgument, match=message):
        await ca.sign_jwt_svid(spiffe_id=sid, audience=["a"])
    [batched] = await ca.sign_workload_x509_svids([WorkloadSvidRequest(sid, _key())])
    assert isinstance(batched, InvalidArgument) and message in str(batched)
    batch = ca.plan_workload_x509_svids([(sid, 0, ())])
    assert isinstance(batch.leaves[0], InvalidArgument)
    with pytest.raises(InvalidArgument, match=message):
        LeafPlan(sid, dt.datetime.now(dt.UTC), ())


async def test_a_plan_forged_past_its_checks_is_still_refused_by_sign_planned(
    ca: ServerCA,
) -> None:
    batch = ca.plan_workload_x509_svids([(TD.spiffe_id("/w"), 0, ())])
    plan = batch.leaves[0]
    assert isinstance(plan, LeafPlan)
    forged = object.__new__(LeafPlan)  # bypasses __post_init__, as a careless caller might
    for name, value in [("spiffe_id", server_id(TD)), ("not_after", plan.not_after)]:
        object.__setattr__(forged, name, value)
    object.__setattr__(forged, "dns_names", ())
    signed = await ca.sign_planned(batch, [(forged, _key()), (plan, _key())])
    assert isinstance(signed[0], InvalidArgument) and "reserved" in str(signed[0])
    assert not isinstance(signed[1], InvalidArgument)
    assert spiffe_id_from_certificate(signed[1]) == TD.spiffe_id("/w")


@pytest.mark.parametrize("path", ALLOWED)
async def test_near_miss_paths_are_workload_ids(ca: ServerCA, path: str) -> None:
    chain = await ca.sign_workload_x509_svid(spiffe_id=TD.spiffe_id(path), public_key=_key())
    assert spiffe_id_from_certificate(chain[0]) == TD.spiffe_id(path)
    assert await ca.sign_jwt_svid(spiffe_id=TD.spiffe_id(path), audience=["a"])


async def test_server_and_agent_svids_still_come_from_their_own_calls(
    ca: ServerCA, clock: ManualClock
) -> None:
    server = await ca.sign_server_x509_svid(public_key=_key())
    assert spiffe_id_from_certificate(server[0]) == server_id(TD)
    agent_id = TD.spiffe_id("/spire/agent/join_token/abc")
    agent = await ca.sign_agent_x509_svid(spiffe_id=agent_id, public_key=_key())
    assert spiffe_id_from_certificate(agent[0]) == agent_id
    assert agent[0].not_valid_after_utc > clock.now()
