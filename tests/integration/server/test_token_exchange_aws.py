"""The token exchange with an AWS credential: a ``sts:GetCallerIdentity`` request presigned by
botocore (the aws_iam agent half's payload, base64) is verified by the server's aws_iam
NodeAttestor against a fake STS on loopback, and exchanged once for a JWT-SVID."""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plastron.attestors.aws_iam.agent import sign_request
from plastron.attestors.aws_iam.config import AwsIamAgentConfig
from tests.cloud.sts import FakeSts, task_role

from .test_api import entry
from .test_token_exchange import AUDIENCE, Exchange, add_entries, exchange_server

SERVER_ID = "plastron.example.org"
_ids = itertools.count(100)


@pytest.fixture
def sts() -> Iterator[FakeSts]:
    with FakeSts() as fake:
        yield fake


@pytest.fixture
async def exchange(tmp_path: Path, sts: FakeSts) -> AsyncIterator[Exchange]:
    plugin = f"""NodeAttestor "aws_iam" {{ plugin_data {{
        server_id = "{SERVER_ID}"
        account_allow_list = ["123456789012"]
        sts_endpoint = "{sts.endpoint}"
    }} }}"""
    async with exchange_server(tmp_path, "", plugin) as ex:
        await add_entries(
            ex.harness, entry("/lambda/payments", "/spire/agentless/aws_iam", "aws_iam:role:web")
        )
        yield ex


def credential(sts: FakeSts, server_id: str = SERVER_ID, role: str = "web") -> str:
    who = sts.issue(task_role(next(_ids), role=role))
    config = AwsIamAgentConfig(server_id=server_id, sts_endpoint=sts.endpoint)
    return base64.b64encode(sign_request(config, who.credentials())).decode()


async def test_aws_request_exchanged_once(exchange: Exchange, sts: FakeSts) -> None:
    signed = credential(sts)
    status, doc = await exchange.post(signed, {"audience": AUDIENCE})
    assert (status, doc.get("spiffe_id")) == (200, "spiffe://example.org/lambda/payments"), doc
    status, doc = await exchange.post(signed, {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_grant"), doc


async def test_aws_refusals(exchange: Exchange, sts: FakeSts) -> None:
    status, doc = await exchange.post(credential(sts, server_id="other.example.org"), {
        "audience": AUDIENCE
    })  # fmt: skip
    assert (status, doc["error"]) == (400, "invalid_grant"), doc
    assert "aws_iam" in doc["error_description"]
    status, doc = await exchange.post(credential(sts, role="batch"), {"audience": AUDIENCE})
    assert (status, doc["error"]) == (400, "invalid_target"), doc
