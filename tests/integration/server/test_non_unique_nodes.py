"""Agents of a non-unique method (aws_iam: a new agent ID per attestation) get short SVIDs
(``non_unique_agent_ttl``, default 1h, beside ``agent_ttl`` for every other method), and the
server prunes their node rows once those SVIDs expire, so a fleet of short-lived tasks does not
grow the datastore: 1,000 attestations, then a prune leaves only the live rows (and a banned
one: the ban outlives the SVID).

Attestations are real: the aws_iam attestor checks requests signed by botocore, which a fake
STS on loopback verifies. The server runs on a ManualClock; requests are signed at the server's
time (within STS's 15 minutes of the real clock)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from plastron.attestors.aws_iam.config import AwsIamAgentConfig
from plastron.clock import ManualClock
from plastron.server.api.attest import _admit
from plastron.server.runtime import PlastronServer
from plastron.spiffe.ids import SpiffeId
from tests.cloud.sts import FakeSts, signed_at, task_role
from tests.conformance.nodeattestor_env import Attempt, AttestEnv, no_challenge_expected
from tests.integration.server.server_harness import running_server

SERVER_ID = "plastron.example.org"
FLEET = 1_000
_ids = itertools.count(1)


@pytest.fixture
def sts() -> Iterator[FakeSts]:
    with FakeSts() as fake:
        yield fake


def plugin(sts: FakeSts) -> str:
    return f"""NodeAttestor "aws_iam" {{ plugin_data {{
        server_id = "{SERVER_ID}"
        account_allow_list = ["123456789012"]
        sts_endpoint = "{sts.endpoint}"
    }} }}"""


def payload(sts: FakeSts, when: dt.datetime) -> bytes:
    config = AwsIamAgentConfig(server_id=SERVER_ID, sts_endpoint=sts.endpoint)
    return signed_at(config, sts.issue(task_role(next(_ids))).credentials(), when)


async def attest_direct(
    server: PlastronServer, sts: FakeSts, key: ec.EllipticCurvePrivateKey
) -> None:
    """One task's attestation through the attestor and the API's admission step."""
    ctx = server.api
    assert ctx is not None
    result = await ctx.attestors["aws_iam"].attest(
        payload(sts, server.clock.now()), no_challenge_expected
    )
    await _admit(ctx, "aws_iam", result, key.public_key(), ttl=ctx.non_unique_agent_ttl)


async def test_non_unique_agents_get_short_svids_by_default(tmp_path: Path, sts: FakeSts) -> None:
    """The default non_unique_agent_ttl is 1h; agent_ttl (3h here) still applies to join_token
    agents. Both through AttestAgent."""
    async with running_server(
        tmp_path, extra_plugins=plugin(sts), extra_server='agent_ttl = "3h"'
    ) as harness:
        store = harness.server.datastore
        assert store is not None
        unique = await harness.attest(await harness.join_token())
        env = AttestEnv(tmp_path, harness.port, harness.socket_path, tmp_path, harness.server)
        out = await env.attest_api(
            "aws_iam", Attempt(payload(sts, dt.datetime.now(dt.UTC)), no_challenge_expected)
        )
        assert out.status is None, out
        now = int(dt.datetime.now(dt.UTC).timestamp())
        for agent_id, hours in ((SpiffeId.parse(out.agent_id), 1), (unique.spiffe_id, 3)):
            node = await store.fetch_attested_node(agent_id)
            assert node is not None
            assert hours * 3600 - 120 <= node.cert_not_after - now <= hours * 3600, agent_id


async def test_a_thousand_tasks_then_prune_leaves_the_live_rows(
    tmp_path: Path, sts: FakeSts
) -> None:
    real = dt.datetime.now(dt.UTC)
    clock = ManualClock(real - dt.timedelta(minutes=10))
    async with running_server(
        tmp_path, clock=clock, extra_plugins=plugin(sts),
        extra_server='non_unique_agent_ttl = "20m"\nagent_ttl = "10m"\n'
        "ratelimit { attestation = false }",
    ) as harness:  # fmt: skip
        server, store = harness.server, harness.server.datastore
        assert store is not None
        key = ec.generate_private_key(ec.SECP256R1())
        await harness.attest(await harness.join_token())  # unique: kept though expired
        for _ in range(FLEET):  # expire at real + 10m
            await attest_direct(server, sts, key)
        # an operator's ban outlives the SVID: that row is kept (as BanAgent writes it)
        (banned, *_), _ = await store.list_attested_nodes(
            page_size=1, by_attestation_type="aws_iam"
        )
        await store.update_attested_node(
            banned.spiffe_id, cert_serial="", new_cert_serial="", new_cert_not_after=0
        )
        clock.set(real + dt.timedelta(minutes=5))
        live = 7
        for _ in range(live):  # expire at real + 25m
            await attest_direct(server, sts, key)
        assert await store.count_attested_nodes(by_attestation_type="aws_iam") == FLEET + live
        assert await server.prune_non_unique_nodes() == 0  # nothing has expired yet
        clock.set(real + dt.timedelta(minutes=15))
        assert await server.prune_non_unique_nodes() == FLEET - 1
        assert await store.count_attested_nodes(by_attestation_type="aws_iam") == live + 1
        assert await store.fetch_attested_node(banned.spiffe_id) is not None
        assert await store.count_attested_nodes() == live + 2  # and the join_token agent
        assert len(await store.list_node_selectors()) == live + 1
