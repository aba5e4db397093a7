"""join_token runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py).

Good tokens come from the admin API (CreateJoinToken over the local socket). Tokens the API
would never issue (expired, or shaped from hostile path text) are written straight into the
server's datastore, so the attestor's own checks are what stands between them and an agent ID.
"""

from __future__ import annotations

import time

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plastron.errors import AlreadyExists, InvalidArgument
from plastron.records import JoinToken
from tests.conformance.nodeattestor import (
    HOSTILE_PATH_VALUES,
    NodeAttestorAdapter,
    NodeAttestorConformance,
)
from tests.conformance.nodeattestor_env import (
    Attempt,
    AttestEnv,
    in_process_env,
    no_challenge_expected,
)


async def _store_token(env: AttestEnv, token: str, expires_at: int) -> None:
    assert env.server is not None and env.server.datastore is not None
    try:
        await env.server.datastore.create_join_token(JoinToken(token, expires_at))
    except AlreadyExists:
        pass  # still there from the attempt through the attestor: it was never consumed
    except InvalidArgument:
        pass  # the datastore itself refuses to hold it; the attestor must still refuse it


class JoinTokenAdapter(NodeAttestorAdapter):
    kind = "join_token"
    message_prefixes = ("join_token: ",)
    not_applicable = {
        "challenge": "the agent sends its token once; the server sends no challenge",
        "wrong_key_type": "a join token is a bearer secret; no key is involved",
        "not_yet_valid": "a join token is valid from its creation; it has no start of validity",
        "untrusted_ca": "a join token carries no certificate",
    }

    async def good(self, env: AttestEnv) -> Attempt:
        token = await env.create_join_token(ttl=600)
        return Attempt(token.encode(), no_challenge_expected, "fresh token")

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        token = f"expired-{time.monotonic_ns()}"
        await _store_token(env, token, int(time.time()) - 60)
        return [Attempt(token.encode(), no_challenge_expected, "token expired a minute ago")]

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        # The token is the agent ID's last path segment.
        await _store_token(env, value, int(time.time()) + 600)
        return [Attempt(value.encode(), no_challenge_expected, f"token {value!r}")]


class TestJoinTokenConformance(NodeAttestorConformance):
    @pytest.fixture
    def adapter(self) -> NodeAttestorAdapter:
        return JoinTokenAdapter()


@pytest.mark.parametrize(
    "hostile", list(HOSTILE_PATH_VALUES.values()), ids=list(HOSTILE_PATH_VALUES)
)
async def test_create_join_token_refuses_hostile_path_text(hostile: str) -> None:
    """The admin API never issues a token that could not be an agent ID path segment."""
    async with in_process_env("") as env:
        with pytest.raises(GRPCError) as err:
            await env.create_join_token(ttl=600, token=hostile)
        assert err.value.status == Status.INVALID_ARGUMENT, err.value
        assert (err.value.message or "").startswith("token: "), err.value.message
