"""The CA signs no workload SVID for a reserved ID (/spire, /spire/server, /spire/agent/...)
or an empty path, whichever of its entry points is used; the server's own SVID and agent
SVIDs still come from their dedicated calls."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncGenerator

import pytest
from ca_unit_support import TD
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.clock import ManualClock
from plastron.errors import InvalidArgument, PlastronError
from plastron.server.ca.batch_signing import SignedX509Svid, WorkloadCsr, X509Batch
from plastron.server.ca.leaves import LeafPlan
from plastron.server.ca.server_ca import ServerCA
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


def _csr() -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    signed = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.DER)


async def _all(
    results: AsyncGenerator[SignedX509Svid | PlastronError, None],
) -> list[SignedX509Svid | PlastronError]:
    async with contextlib.aclosing(results) as items:
        return [item async for item in items]


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
    [batched] = await _all(ca.sign_workload_x509_svids([WorkloadCsr(sid, _csr())]))
    assert isinstance(batched, InvalidArgument) and message in str(batched)


async def test_a_plan_made_past_the_cas_checks_is_still_refused_when_signed(
    ca: ServerCA, clock: ManualClock
) -> None:
    """Whoever signs a batch (here, a thread, a worker) refuses a reserved ID on its own."""
    current = ca.manager.current_x509
    assert current is not None
    not_after = clock.now() + dt.timedelta(minutes=5)
    plans: list[LeafPlan | PlastronError] = [
        LeafPlan(server_id(TD), not_after),
        LeafPlan(TD.spiffe_id("/w"), not_after),
    ]
    batch = X509Batch(current, clock.now(), plans)
    signed = await _all(ca.batches.sign(batch, [(_csr(), "a"), (_csr(), "b")]))
    assert isinstance(signed[0], InvalidArgument) and "reserved" in str(signed[0])
    assert isinstance(signed[1], SignedX509Svid)
    leaf = x509.load_der_x509_certificate(signed[1].chain[0])
    assert spiffe_id_from_certificate(leaf) == TD.spiffe_id("/w")


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
