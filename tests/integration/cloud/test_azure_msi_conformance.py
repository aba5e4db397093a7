"""azure_msi runs the NodeAttestor conformance suite, plus the refusals specific to signed MSI
tokens, each through the attestor and through AttestAgent with no node row written.

Good attempts come from the real agent half reading a fake Instance Metadata Service on
loopback, which signs tokens with a test key; the server trusts that key through ``jwks_file``
(an x5c-only JWKS, as Entra publishes) and resolves selectors against a fake Resource Manager
with app credentials. Every good attempt is a fresh VM (trust on first use)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from plastron.attestors.azure_msi.agent import AzureMsiAgentAttestor
from plastron.attestors.azure_msi.config import AzureMsiAgentConfig
from tests.cloud.azure import APP_ID, APP_SECRET, SUBSCRIPTION, TENANT, FakeAzure, msi_claims
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
OTHER_TENANT = "0d3b9c6e-0000-4000-8000-000000000001"


def payload(token: str) -> bytes:
    return ('{"token": "' + token + '"}').encode()


class AzureMsiAdapter(NodeAttestorAdapter):
    kind = "azure_msi"
    message_prefixes = ("azure_msi: ",)
    first_use_only = True
    not_applicable: ClassVar[dict[str, str]] = {
        "challenge": "azure_msi has no challenge round: the payload is the signed token"
    }

    def __init__(self, directory: Path, azure: FakeAzure) -> None:
        self.dir = directory
        self.azure = azure
        (directory / "jwks.json").write_text(azure.issuer.jwks(extra=[ec_jwk("ec-key")]))
        (directory / "app-secret").write_text(APP_SECRET + "\n")

    def server_plugins(self, case: str) -> str:
        return f"""NodeAttestor "azure_msi" {{ plugin_data {{
            tenants = {{
                "{TENANT}" = {{
                    subscription_id = "{SUBSCRIPTION}"
                    app_id = "{APP_ID}"
                    app_secret_file = "{self.dir}/app-secret"
                }}
            }}
            jwks_file = "{self.dir}/jwks.json"
            resource_manager_endpoint = "{self.azure.arm()}"
            authority_endpoint = "{self.azure.arm()}"
        }} }}"""

    def fresh_vm(self) -> str:
        principal = str(uuid.uuid4())
        self.azure.add_vm(principal, "frontend", f"vm-{principal[:8]}")
        return principal

    def attempt(self, token: str, label: str) -> Attempt:
        return Attempt(payload(token), no_challenge_expected, label)

    def token(self, **override: object) -> str:
        return self.azure.issuer.sign(msi_claims(self.fresh_vm(), **override))  # type: ignore[arg-type]

    async def good(self, env: AttestEnv) -> Attempt:
        self.azure.principal = self.fresh_vm()
        agent = AzureMsiAgentAttestor(AzureMsiAgentConfig(metadata_endpoint=self.azure.endpoint))
        return Attempt(await agent.payload(), agent.answer, "token from IMDS")

    async def wrong_key_type(self, env: AttestEnv) -> list[Attempt]:
        claims = msi_claims(self.fresh_vm())
        return [
            self.attempt(rs256_raw(claims, {"alg": "RS256", "kid": "ec-key"}, rsa_key(31)),
                         "kid of an EC key"),
            self.attempt(hmac_signed(claims, public_pem(rsa_key(31)), "test-kid-31"),
                         "HS256 keyed with Entra's public key"),
            self.attempt(unsigned(claims, {"alg": "none", "kid": "test-kid-31"}), "alg none"),
        ]  # fmt: skip

    async def expired(self, env: AttestEnv) -> list[Attempt]:
        old = NOW - dt.timedelta(hours=9)
        return [self.attempt(self.token(now=old), "expired an hour ago")]

    async def not_yet_valid(self, env: AttestEnv) -> list[Attempt]:
        return [self.attempt(self.token(now=NOW + dt.timedelta(minutes=10)), "nbf in ten minutes")]

    async def untrusted_ca(self, env: AttestEnv) -> list[Attempt]:
        claims = msi_claims(self.fresh_vm())
        return [
            self.attempt(Issuer.make(33).sign(claims), "signed by a key Entra does not publish"),
            self.attempt(self.azure.issuer.sign(claims, key=rsa_key(33)),
                         "another key under Entra's kid"),
        ]  # fmt: skip

    async def hostile_agent_path(self, env: AttestEnv, value: str) -> list[Attempt]:
        return [self.attempt(self.azure.issuer.sign(msi_claims(value)), f"principal {value!r}")]


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    with FakeAzure() as fake:
        yield fake


@pytest.fixture
def adapter(tmp_path: Path, azure: FakeAzure) -> AzureMsiAdapter:
    return AzureMsiAdapter(tmp_path, azure)


class TestAzureMsiConformance(NodeAttestorConformance):
    pass


def _bad_tokens(adapter: AzureMsiAdapter) -> list[tuple[str, bytes, str]]:
    good = adapter.token()
    other = msi_claims(adapter.fresh_vm(), tenant=OTHER_TENANT)
    mixed = msi_claims(adapter.fresh_vm(), iss=f"https://sts.windows.net/{OTHER_TENANT}/")
    return [
        ("tampered principal", payload(tamper(good, sub=adapter.fresh_vm())),
         "signature does not verify"),
        ("wrong resource", payload(adapter.token(audience="https://vault.azure.net")),
         "audience 'https://vault.azure.net' is not 'https://management.azure.com/'"),
        ("tenant not configured", payload(adapter.azure.issuer.sign(other)),
         f"tenant '{OTHER_TENANT}' is not authorized"),
        ("issuer of another tenant", payload(adapter.azure.issuer.sign(mixed)),
         f"issuer 'https://sts.windows.net/{OTHER_TENANT}/' is not"),
        ("unknown kid", payload(Issuer.make(34).sign(msi_claims(adapter.fresh_vm()))),
         "'test-kid-34' is not in the key set"),
        ("principal with no VM", payload(adapter.azure.issuer.sign(msi_claims(str(uuid.uuid4())))),
         "expected one virtual machine with principal"),
        ("payload not SPIRE's JSON", good.encode(), "payload is not valid JSON"),
        ("payload with another key", b'{"token": "x", "extra": 1}', "unknown key 'extra'"),
    ]  # fmt: skip


async def test_bad_tokens_are_refused_cleanly(
    adapter: AzureMsiAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    async with in_process_env(adapter.server_plugins("bad")) as env:
        bad = _bad_tokens(adapter)

        async def make() -> list[Attempt]:
            return [Attempt(data, no_challenge_expected, label) for label, data, _ in bad]

        messages = await expect_refused(adapter, env, make, caplog)
        for (label, _, expected), message in zip(bad, messages, strict=True):
            assert expected in message, f"{label}: {message}"
