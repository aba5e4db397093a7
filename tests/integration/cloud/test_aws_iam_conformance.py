"""aws_iam runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py) and the
refusals specific to signed STS requests, each through the attestor and through AttestAgent
with no node row written.

A fake STS on loopback verifies SigV4 with the test credentials it issued; good attempts come
from the real agent half (botocore's signer) with those credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Iterator
from typing import ClassVar

import pytest

from plastron.attestors.aws_iam.agent import AwsIamAgentAttestor, sign_request
from plastron.attestors.aws_iam.config import AwsIamAgentConfig
from tests.cloud.sts import FakeSts, Identity, signed_at, task_role
from tests.conformance.nodeattestor import (
    NodeAttestorAdapter,
    NodeAttestorConformance,
    expect_refused,
)
from tests.conformance.nodeattestor_env import (
    Attempt,
    AttestEnv,
    in_process_env,
    no_challenge_expected,
)

SERVER_ID = "plastron.example.org"
_ids = itertools.count(1)


class AwsIamAdapter(NodeAttestorAdapter):
    kind = "aws_iam"
    message_prefixes = ("aws_iam: ",)
    not_applicable: ClassVar[dict[str, str]] = {
        "challenge": "aws_iam has no challenge round: the payload is the signed STS request",
        "wrong_key_type": "SigV4 is an HMAC with the role's secret key: there is no key type",
    }

    def __init__(self, sts: FakeSts) -> None:
        self.sts = sts

    def server_plugins(self, case: str) -> str:
        return f"""NodeAttestor "aws_iam" {{ plugin_data {{
            server_id = "{SERVER_ID}"
            account_allow_list = ["123456789012"]
            sts_endpoint = "{self.sts.endpoint}"
        }} }}"""

    def config(self, server_id: str = SERVER_ID, endpoint: str | None = None) -> AwsIamAgentConfig:
        return AwsIamAgentConfig(server_id=server_id, sts_endpoint=endpoint or self.sts.endpoint)

    def identity(self, **kw: str) -> Identity:
        return self.sts.issue(task_role(next(_ids), **kw))

    def attempt(self, payload: bytes, label: str) -> Attempt:
        return Attempt(payload, no_challenge_expected, label)

    async def good(self, env: AttestEnv) -> Attempt:
        agent = AwsIamAgentAttestor(self.config(), self.identity().credentials())
        return Attempt(await agent.payload(), agent.answer, "signed GetCallerIdentity")

    def at(self, delta: dt.timedelta, label: str) -> list[Attempt]:
        when = dt.datetime.now(dt.UTC) + delta
        return [self.attempt(signed_at(self.config(), self.identity().credentials(), when), label)]

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        return self.at(-dt.timedelta(minutes=20), "signed 20 minutes ago")

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        return self.at(dt.timedelta(minutes=20), "signed 20 minutes from now")

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        unknown = task_role(next(_ids))  # never issued by the fake STS
        forged = Identity(**{**self.identity().__dict__, "secret_key": "guessed"})
        return [
            self.attempt(sign_request(self.config(), unknown.credentials()), "unknown key"),
            self.attempt(sign_request(self.config(), forged.credentials()), "wrong secret"),
        ]

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        who = self.identity(role=value)
        return [self.attempt(sign_request(self.config(), who.credentials()), f"role {value!r}")]


@pytest.fixture
def sts() -> Iterator[FakeSts]:
    with FakeSts() as fake:
        yield fake


@pytest.fixture
def adapter(sts: FakeSts) -> AwsIamAdapter:
    return AwsIamAdapter(sts)


class TestAwsIamConformance(NodeAttestorConformance):
    pass


# ---- behaviour specific to aws_iam -----------------------------------------------------------


async def test_each_attestation_is_a_new_agent(adapter: AwsIamAdapter) -> None:
    """The same role attests twice (two tasks): two agents, each account/role/<uuid>, with the
    role's selectors; never "already attested"."""
    async with in_process_env(adapter.server_plugins("good")) as env:
        who = adapter.identity(role="web")
        agent = AwsIamAgentAttestor(adapter.config(), who.credentials())
        ids = []
        for _ in range(2):
            out = await env.attest_api("aws_iam", adapter.attempt(await agent.payload(), "task"))
            assert out.status is None, out
            ids.append(out.agent_id)
        prefix = "spiffe://example.org/spire/agent/aws_iam/123456789012/web/"
        assert ids[0] != ids[1] and all(i.startswith(prefix) for i in ids), ids
        result = await env.attest_direct("aws_iam", adapter.attempt(await agent.payload(), "t"))
        assert not isinstance(result, Exception), result
        assert sorted(s.value for s in result.selectors) == sorted([
            "account:123456789012", "role:web", f"arn:{who.arn}", f"user_id:{who.user_id}",
        ])  # fmt: skip


def _edit_headers(payload: bytes, **changes: str | None) -> bytes:
    doc = json.loads(payload)
    headers = json.loads(base64.b64decode(doc["iam_request_headers"]))
    for key, value in changes.items():
        name = key.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = [value]
    doc["iam_request_headers"] = base64.b64encode(json.dumps(headers).encode()).decode()
    return json.dumps(doc).encode()


def _bad_requests(adapter: AwsIamAdapter) -> list[tuple[str, bytes, str]]:
    """(label, payload, the message's distinctive part)."""

    def signed(config: AwsIamAgentConfig) -> bytes:
        return sign_request(config, adapter.identity().credentials())

    good = signed(adapter.config())
    auth = json.loads(base64.b64decode(json.loads(good)["iam_request_headers"]))["Authorization"]
    unsigned_id = auth[0].replace(";x-plastron-server-id", "")
    return [
        ("signed for another server ID", signed(adapter.config(server_id="other-server")),
         "signed for server ID 'other-server'"),
        ("server ID changed after signing", _edit_headers(good, X_Plastron_Server_ID="x"),
         "signed for server ID 'x'"),
        ("server ID header not signed", _edit_headers(good, Authorization=unsigned_id),
         "x-plastron-server-id header is not among the signed headers"),
        ("signed for another host", signed(adapter.config(endpoint="https://sts.evil.example")),
         "signed for host 'sts.evil.example'"),
        ("signed 10 minutes ago (STS would still accept it)",
         signed_at(adapter.config(), adapter.identity().credentials(),
                   dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)),
         "more than 0:05:00 from now"),
        ("account not allowed", signed_other_account(adapter),
         "account 999999999999 is not in the account_allow_list"),
    ]  # fmt: skip


def signed_other_account(adapter: AwsIamAdapter) -> bytes:
    who = adapter.sts.issue(task_role(next(_ids), account="999999999999"))
    return sign_request(adapter.config(), who.credentials())


async def test_bad_requests_are_refused_cleanly(
    adapter: AwsIamAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    async with in_process_env(adapter.server_plugins("bad")) as env:
        bad = _bad_requests(adapter)
        calls = adapter.sts.calls()

        async def make() -> list[Attempt]:
            return [adapter.attempt(payload, label) for label, payload, _ in _bad_requests(adapter)]

        messages = await expect_refused(adapter, env, make, caplog)
        for (label, _, expected), message in zip(bad, messages, strict=True):
            assert expected in message, f"{label}: {message}"
        # only the other-account requests reached STS: every other refusal is made before
        assert adapter.sts.calls() - calls == 2
