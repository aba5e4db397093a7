"""gcp_iit runs the NodeAttestor conformance suite (tests/conformance/nodeattestor.py), plus the
refusals specific to signed tokens, each through the attestor and through AttestAgent with no
node row written.

Good attempts come from the real agent half reading a fake metadata server on loopback, which
signs tokens with a test key; the server trusts that key through ``jwks_file``. Every good
attempt is a fresh instance (trust on first use admits an instance once).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from plastron.attestors.gcp_iit.agent import GcpIitAgentAttestor
from plastron.attestors.gcp_iit.config import GcpIitAgentConfig
from tests.cloud.gcp import FakeGoogle, gcp_claims
from tests.cloud.tokens import (
    Issuer,
    ec_jwk,
    hmac_signed,
    public_pem,
    rs256_raw,
    rsa_key,
    tamper,
    unsigned,
)
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

NOW = dt.datetime.now(dt.UTC)
_ids = itertools.count(5_000_000)


class GcpIitAdapter(NodeAttestorAdapter):
    kind = "gcp_iit"
    message_prefixes = ("gcp_iit: ",)
    first_use_only = True
    not_applicable: ClassVar[dict[str, str]] = {
        "challenge": "gcp_iit has no challenge round: the payload is the signed token"
    }

    def __init__(self, directory: Path, google: FakeGoogle) -> None:
        self.dir = directory
        self.google = google
        (directory / "jwks.json").write_text(google.issuer.jwks(extra=[ec_jwk("ec-key")]))

    def server_plugins(self, case: str) -> str:
        return f"""NodeAttestor "gcp_iit" {{ plugin_data {{
            projectid_allow_list = ["proj-a"]
            jwks_file = "{self.dir}/jwks.json"
        }} }}"""

    def token(self, **override: Any) -> str:
        return self.google.issuer.sign(gcp_claims(str(next(_ids)), **override))

    def attempt(self, token: str, label: str) -> Attempt:
        return Attempt(token.encode(), no_challenge_expected, label)

    async def good(self, env: AttestEnv) -> Attempt:
        self.google.instance["instance_id"] = str(next(_ids))
        agent = GcpIitAgentAttestor(GcpIitAgentConfig(identity_token_host=self.google.host))
        return Attempt(await agent.payload(), agent.answer, "token from the metadata server")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        claims = gcp_claims(str(next(_ids)))
        return [
            self.attempt(rs256_raw(claims, {"alg": "RS256", "kid": "ec-key"}, rsa_key(11)),
                         "kid of an EC key"),
            self.attempt(hmac_signed(claims, public_pem(rsa_key(11)), "test-kid-11"),
                         "HS256 keyed with Google's public key"),
            self.attempt(unsigned(claims, {"alg": "none", "kid": "test-kid-11"}), "alg none"),
        ]  # fmt: skip

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        old = NOW - dt.timedelta(hours=2)
        return [self.attempt(self.token(now=old), "expired an hour ago")]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        later = NOW + dt.timedelta(minutes=10)
        return [self.attempt(self.token(now=later), "issued ten minutes from now")]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        claims = gcp_claims(str(next(_ids)))
        return [
            self.attempt(Issuer.make(13).sign(claims), "signed by a key Google does not publish"),
            self.attempt(self.google.issuer.sign(claims, key=rsa_key(13)),
                         "another key under Google's kid"),
        ]  # fmt: skip

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        token = self.google.issuer.sign(gcp_claims(value))
        return [self.attempt(token, f"instance_id {value!r}")]


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture
def adapter(tmp_path: Path, google: FakeGoogle) -> GcpIitAdapter:
    return GcpIitAdapter(tmp_path, google)


class TestGcpIitConformance(NodeAttestorConformance):
    pass


# ---- refusals specific to signed tokens -----------------------------------------------------


def _bad_tokens(adapter: GcpIitAdapter) -> list[tuple[str, str, str]]:
    """(label, token, the message's distinctive part)."""
    good = adapter.token()
    head, body, sig = good.split(".")
    return [
        (
            "tampered claims",
            tamper(good, aud="spire-gcp-node-attestor", sub="x"),
            "signature does not verify",
        ),
        (
            "tampered project",
            tamper(good, google={"compute_engine": {"project_id": "proj-a"}}),
            "signature does not verify",
        ),
        (
            "wrong audience",
            adapter.token(audience="someone-else"),
            "audience 'someone-else' is not",
        ),
        (
            "wrong project",
            adapter.token(project="proj-evil"),
            "project ID 'proj-evil' is not in the allow list",
        ),
        (
            "unknown kid",
            Issuer.make(14).sign(gcp_claims("77")),
            "'test-kid-14' is not in the key set",
        ),
        (
            "wrong issuer",
            adapter.token(iss="https://evil.example"),
            "issuer 'https://evil.example'",
        ),
        ("format=standard", adapter.token(google=None), "format=full"),
        ("signature cut", f"{head}.{body}.{sig[:-4]}", "signature does not verify"),
    ]


async def test_bad_tokens_are_refused_cleanly(
    adapter: GcpIitAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    async with in_process_env(adapter.server_plugins("bad")) as env:
        bad = _bad_tokens(adapter)

        async def make() -> list[Attempt]:
            return [adapter.attempt(token, label) for label, token, _ in bad]

        messages = await expect_refused(adapter, env, make, caplog)
        for (label, _, expected), message in zip(bad, messages, strict=True):
            assert expected in message, f"{label}: {message}"
